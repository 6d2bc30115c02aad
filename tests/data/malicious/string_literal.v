// a string literal (only system tasks and directives use strings)
module mul2u_evil (A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  wire [39:0] s;
  assign s = "pwned";
  assign O = {A[1] & B[1] & A[0] & B[0], A[1] & B[1] & ~(A[0] & B[0]), A[1] & B[0] ^ A[0] & B[1], A[0] & B[0]};
endmodule
