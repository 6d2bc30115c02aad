// hand-written exact 2x2 unsigned multiplier: partial products, a half adder, gate primitives
`timescale 1ns/1ps
module mul2u_hand (A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  wire p00, p01, p10, p11, s1, c1;
  and g0 (p00, A[0], B[0]);
  and g1 (p01, A[0], B[1]);
  and g2 (p10, A[1], B[0]);
  assign p11 = A[1] & B[1];
  HAX h1 (.A(p01), .B(p10), .YS(s1), .YC(c1));
  assign O[0] = p00;
  assign O[1] = s1;
  assign {O[3], O[2]} = {p11 & c1, p11 ^ c1};
endmodule

module HAX (A, B, YS, YC);
  input A, B;
  output YS, YC;
  xor (YS, A, B);
  assign YC = (A & B);
endmodule
