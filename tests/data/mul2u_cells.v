// hand-written exact 2x2 unsigned multiplier made of undefined OSU-style library cells
// (resolved from axlab's built-in cell library) whose product port is named Z, not O
module mul2u_cells (A, B, Z);
  input [1:0] A;
  input [1:0] B;
  output [3:0] Z;
  wire na0, nb1, nand00, p00, p01, p10, n10, p11, s1, c1, s1b;
  NAND2X1 g0 (.A(A[0]), .B(B[0]), .Y(nand00));
  XNOR2X1 g1 (.A(nand00), .B(1'b0), .Y(p00));          // ~(x ^ 0) = ~x
  INVX1 g2 (.A(A[0]), .Y(na0));
  INVX1 g3 (.A(B[1]), .Y(nb1));
  OAI21X1 g4 (.A(na0), .B(nb1), .C(1'b1), .Y(p01));    // ~(~a0 | ~b1) = a0 & b1
  AOI21X1 g5 (.A(A[1]), .B(B[0]), .C(1'b0), .Y(n10));  // ~(a1 & b0)
  NOR2X1 g6 (.A(n10), .B(1'b0), .Y(p10));
  MUX2X1 g7 (.A(1'b0), .B(A[1]), .S(B[1]), .Y(p11));   // b1 ? a1 : 0 (non-inverting)
  HAX1 h1 (.A(p01), .B(p10), .YS(s1), .YC(c1));
  BUFX2 g8 (.A(s1), .Y(s1b));
  FAX1 f1 (.A(p11), .B(c1), .C(1'b0), .YS(Z[2]), .YC(Z[3]));
  assign Z[0] = p00;
  assign Z[1] = s1b;
endmodule
