// hand-written exact 2x2 unsigned multiplier whose widths, indices and replication counts
// are constant expressions (*, /, %, **, <<, parentheses)
module mul2u_constexpr (A, B, O);
  input [2*1-1:0] A;
  input [(4/2)-1:0] B;
  output [2**2-1:0] O;
  wire [(1<<2)-1:0] pp;
  wire [2*2-1:0] low, mid, high;
  assign pp[0] = A[0] & B[0];
  assign pp[5%4] = A[0] & B[2-1];
  assign pp[2*1] = A[1] & B[0];
  assign pp[2*1+1] = A[1] & B[1];
  assign low = {{(6/2){1'b0}}, pp[0]};
  assign mid = {{(2*1){1'b0}}, pp[1], 1'b0} + {{2{1'b0}}, pp[2], 1'b0};
  assign high = {1'b0, pp[3], {(1*2){1'b0}}};
  assign O = low + mid + high;
endmodule
