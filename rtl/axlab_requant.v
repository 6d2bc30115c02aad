// axlab requantiser (Verilog-2005, synthesizable, combinational), shared by all conv/dense
// layer engines of a network (one layer runs at a time):
//   q = clamp(((acc * m0 + 2^(rs-1)) >>> rs) + zo, lo, 127)
// acc: int32 accumulator incl. bias term; m0 in [2^30, 2^31); 1 <= rs <= 62.
module axlab_requant (
    input  wire signed [31:0] acc,
    input  wire        [31:0] m0,
    input  wire        [7:0]  rs,
    input  wire signed [7:0]  zo,
    input  wire signed [7:0]  lo,
    output wire        [7:0]  q
);
  wire signed [32:0] m0s = {1'b0, m0};
  wire signed [63:0] scaled = acc * m0s;           // 32 x 33-bit signed product
  wire signed [63:0] rnd = scaled + (64'sd1 <<< (rs - 8'd1));
  wire signed [63:0] shifted = rnd >>> rs;
  wire signed [63:0] v = shifted + zo;
  assign q = (v < lo) ? lo : (v > 64'sd127) ? 8'd127 : v[7:0];
endmodule
