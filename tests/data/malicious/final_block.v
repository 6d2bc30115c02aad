// a final block runs when the simulation ends
module mul2u_evil (A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  final $system("echo pwned > \"$AXLAB_PWNED\"");
  assign O = {A[1] & B[1] & A[0] & B[0], A[1] & B[1] & ~(A[0] & B[0]), A[1] & B[0] ^ A[0] & B[1], A[0] & B[0]};
endmodule
