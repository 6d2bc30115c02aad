// Library = EvoApprox8b (axlab test: a hand-written 2x2 circuit with an older-style header)
// Circuit = mul2u_legacy
// Area   (180) = 80
// Power  (180) = 50.00
// Area   (45) = 20.000000
// Delay  (45) = 0.100000
// Power  (45) = 12.50
// MAE = 0.125000
// MSE = 0.250000
// MRE = 1.390000 %
// WCE = 2
// WCRE = 22.000000 %
// EP = 6.250000 %

module mul2u_legacy(A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  wire p01, p10;
  // approximate: the middle column ORs its two partial products and drops the carry,
  // so only 3 x 3 is wrong (7 instead of 9)
  AND2X1 n0(.A(A[0]), .B(B[0]), .Y(O[0]));
  AND2X1 n1(.A(A[0]), .B(B[1]), .Y(p01));
  AND2X1 n2(.A(A[1]), .B(B[0]), .Y(p10));
  OR2X1 n3(.A(p01), .B(p10), .Y(O[1]));
  AND2X1 n4(.A(A[1]), .B(B[1]), .Y(O[2]));
  assign O[3] = 1'b0;
endmodule
