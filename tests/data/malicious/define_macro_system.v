// a macro hides an initial block that runs a shell command at simulation start
`define P initial begin $system("echo pwned > \"$AXLAB_PWNED\""); end
module mul2u_evil (A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  `P
  assign O = {1'b0, A[1] & B[1], A[1] & B[0] | A[0] & B[1], A[0] & B[0]};
endmodule
