// hand-written exact 2x2 signed multiplier written with behavioural +/-, ?: and concatenation
module mul2s_hand (A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  wire [3:0] ea, eb, p0, p1;
  assign ea = {{2{A[1]}}, A};
  assign eb = {{2{B[1]}}, B};
  assign p0 = B[0] ? ea : 4'b0000;
  assign p1 = B[1] ? {ea[2:0], 1'b0} : 4'd0;
  assign O = p0 - p1;
endmodule
