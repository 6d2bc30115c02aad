// a 1x1 "multiplier" built from a half adder cell: O = {carry, sum} of A + B
module ha1 (A, B, O);
  input [0:0] A;
  input [0:0] B;
  output [1:0] O;
  HA u0 (.a(A[0]), .b(B[0]), .s(O[0]), .c(O[1]));
endmodule

module HA (input a, input b, output s, output c);
  assign s = a ^ b;
  assign c = a & b;
endmodule
