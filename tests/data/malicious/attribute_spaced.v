// an attribute written with blanks after the parenthesis
module mul2u_evil (A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  ( * keep * ) wire k;
  assign k = A[0];
  assign O = {A[1] & B[1] & A[0] & B[0], A[1] & B[1] & ~(A[0] & B[0]), A[1] & B[0] ^ A[0] & B[1], A[0] & B[0]};
endmodule
