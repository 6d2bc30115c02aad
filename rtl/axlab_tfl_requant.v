// axlab TFLite fixed-point arithmetic (Verilog-2005, synthesizable, combinational): the integer
// helpers of LiteRT's reference kernels, bit for bit as nn/tflite_ops.py computes them.
//   axlab_tfl_srdhm   SaturatingRoundingDoublingHighMul(a, b): round(a * b / 2^31), ties away
//                     from zero; INT32_MIN * INT32_MIN saturates to INT32_MAX
//   axlab_tfl_rdbpot  RoundingDivideByPOT(x, e): x / 2^e rounded half away from zero, e in 0..31
//   axlab_tfl_mbqm    MultiplyByQuantizedMultiplier(x, M, shift), shift in [-31, 30]:
//                     single = 0: rdbpot(srdhm(x << max(shift, 0) (wraps to 32 bits), M), max(-shift, 0))
//                               (gemmlowp double rounding: CONV_2D, ADD)
//                     single = 1: (x * M + 2^(30 - shift)) >>> (31 - shift)  (one rounding: FULLY_CONNECTED)
//   axlab_tfl_requant q = clamp(mbqm(acc, M, shift) + zo, lo, hi): one requantiser serves every
//                     conv/dense layer of an imported network (one layer runs at a time)
//   axlab_tfl_clamp   q = clamp(v + zo, lo, hi)
module axlab_tfl_srdhm (
    input  wire signed [31:0] a,
    input  wire signed [31:0] b,
    output wire signed [31:0] y
);
  wire signed [63:0] ab = a * b;                   // operands sign-extended to 64 bits
  wire signed [63:0] v = ab + (ab[63] ? 64'sd1 - 64'sd1073741824 : 64'sd1073741824);
  wire signed [63:0] fl = v >>> 31;                // floor(v / 2^31)
  wire signed [63:0] tr = (v[63] && v[30:0] != 31'd0) ? fl + 64'sd1 : fl;  // C++ division truncates
  wire ovf = (a == 32'sh80000000) && (b == 32'sh80000000);
  assign y = ovf ? 32'sh7fffffff : tr[31:0];
endmodule

module axlab_tfl_rdbpot (
    input  wire signed [31:0] x,
    input  wire        [4:0]  e,
    output wire signed [31:0] y
);
  wire [31:0] mask = (32'd1 << e) - 32'd1;
  wire [31:0] rem = x & mask;
  wire [32:0] thr = {1'b0, mask >> 1} + {32'd0, x[31]};
  wire signed [31:0] sh = x >>> e;
  assign y = sh + (({1'b0, rem} > thr) ? 32'sd1 : 32'sd0);
endmodule

// the double-rounding form alone (ADD's rescaling needs no other)
module axlab_tfl_mbqm_dbl (
    input  wire signed [31:0] x,
    input  wire signed [31:0] m,
    input  wire signed [7:0]  shift,
    output wire signed [31:0] y
);
  wire [4:0] left = shift[7] ? 5'd0 : shift[4:0];
  wire [7:0] neg = 8'd0 - shift;
  wire [4:0] right = shift[7] ? neg[4:0] : 5'd0;
  wire signed [31:0] xl = x <<< left;              // wraps to 32 bits, as the int32 C++ expression
  wire signed [31:0] hi;
  axlab_tfl_srdhm u_srdhm (.a(xl), .b(m), .y(hi));
  axlab_tfl_rdbpot u_rdbpot (.x(hi), .e(right), .y(y));
endmodule

module axlab_tfl_mbqm (
    input  wire signed [31:0] x,
    input  wire signed [31:0] m,
    input  wire signed [7:0]  shift,
    input  wire               single,
    output wire signed [63:0] y
);
  // double rounding (gemmlowp)
  wire signed [31:0] dbl;
  axlab_tfl_mbqm_dbl u_dbl (.x(x), .m(m), .shift(shift), .y(dbl));
  // single rounding (TFLITE_SINGLE_ROUNDING)
  wire signed [63:0] p = x * m;
  wire [7:0] total = 8'd31 - shift;                // 1..62
  wire signed [63:0] rnd = 64'sd1 <<< (total - 8'd1);
  wire signed [63:0] sgl = (p + rnd) >>> total;
  assign y = single ? sgl : {{32{dbl[31]}}, dbl};
endmodule

module axlab_tfl_requant (
    input  wire signed [31:0] acc,
    input  wire signed [31:0] mult,
    input  wire signed [7:0]  shift,
    input  wire               single,
    input  wire signed [7:0]  zo,
    input  wire signed [7:0]  lo,
    input  wire signed [7:0]  hi,
    output wire        [7:0]  q
);
  wire signed [63:0] s;
  axlab_tfl_mbqm u_mbqm (.x(acc), .m(mult), .shift(shift), .single(single), .y(s));
  axlab_tfl_clamp u_clamp (.v(s), .zo(zo), .lo(lo), .hi(hi), .q(q));
endmodule

// q = clamp(v + zo, lo, hi) as an int8 code
module axlab_tfl_clamp (
    input  wire signed [63:0] v,
    input  wire signed [7:0]  zo,
    input  wire signed [7:0]  lo,
    input  wire signed [7:0]  hi,
    output wire        [7:0]  q
);
  wire signed [63:0] w = v + zo;
  assign q = (w < lo) ? lo : (w > hi) ? hi : w[7:0];
endmodule
