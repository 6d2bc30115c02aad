// axlab TFLite int8 SOFTMAX engine (Verilog-2005, synthesizable): LiteRT's reference int8 softmax
// (reference_ops::Softmax, gemmlowp fixed point) over N int8 codes, bit for bit as
// nn.tflite_ops.softmax_int8:
//   max   = max of the N codes
//   e[d]  = exp table of the model (external ROM, 256 x int32, Q0.31): for d = max - code in 0..255,
//           exp_on_negative_values(mbqm(-d, mult, left)), 0 where -d < diff_min (written by axlab export
//           from the model's input scale and beta with nn.tflite_ops)
//   sum   = sum of RoundingDivideByPOT(e, 12)                        (Q12.19)
//   scale = 1 / sum: headroom = clz(sum), one_over_one_plus_x((sum << headroom) - 1) (Newton-Raphson,
//           three iterations), exponent = (12 - headroom) + 31 - 8
//   out   = clamp(RoundingDivideByPOT(srdhm(scale, e), exponent) - 128, -128, 127)
// Phases: N clocks to find the max; two clocks per code to sum (RAM read, then table read); seven
// clocks for the reciprocal (one srdhm unit, shared with the outputs); two clocks per code to write
// the outputs: 5N + 7 clocks.
// N <= 512 keeps exponent <= 31 (sum < 2^28).
module axlab_tfl_softmax_engine #(
    parameter integer N = 10,
    parameter integer AW = 16,
    parameter integer IN_BASE = 0, OUT_BASE = 0
) (
    input  wire          clk,
    input  wire          rst,
    input  wire          start,
    output reg           done,
    output wire [AW-1:0] raddr,
    input  wire [7:0]    rdata,
    output reg           we,
    output reg  [AW-1:0] waddr,
    output reg  [7:0]    wdata,
    output wire [7:0]    t_addr,
    input  wire [31:0]   t_data
);
  localparam [2:0] S_IDLE = 3'd0, S_MAX = 3'd1, S_SUM = 3'd2, S_RECIP = 3'd3, S_OUT = 3'd4;
  reg [2:0]  state;
  reg        ph;
  reg [31:0] i;
  reg signed [7:0]  mx, x_r;
  reg signed [31:0] sum, scale_r;
  reg [5:0]  expo_r;
  wire signed [7:0] x = rdata;
  wire [31:0] in_addr = IN_BASE + i;
  assign raddr = in_addr[AW-1:0];
  wire signed [8:0] d = mx - x_r;                  // 0..255
  assign t_addr = d[7:0];
  wire signed [31:0] e = t_data;

  // ---- sum term: RoundingDivideByPOT(e, 12)
  wire signed [31:0] e_acc;
  axlab_tfl_rdbpot u_acc (.x(e), .e(5'd12), .y(e_acc));

  // ---- reciprocal of the sum (GetReciprocal), sequential: one srdhm unit serves the seven
  // products of the reciprocal (S_RECIP, clocks r = 0..6) and the output products (S_OUT)
  reg [5:0] headroom;
  integer b;
  always @* begin
    headroom = 6'd32;
    for (b = 0; b < 32; b = b + 1)
      if (sum[b]) headroom = 6'd31 - b[5:0];
  end
  wire [31:0] sh_sum = sum << headroom[4:0];
  wire signed [31:0] smo = sh_sum - 32'h80000000;  // shifted_minus_one (wraps)
  // one_over_one_plus_x_for_x_in_0_1: half_den = RoundingHalfSum(smo, 1.0)
  wire signed [32:0] hs = {smo[31], smo} + 33'sd2147483647;
  wire signed [32:0] hs1 = hs + (hs[32] ? -33'sd1 : 33'sd1);
  wire signed [32:0] hs2 = hs1 >>> 1;
  wire signed [31:0] half_den = (hs1[32] && hs1[0]) ? hs2[31:0] + 32'sd1 : hs2[31:0];  // truncating / 2
  reg [2:0] r;                                     // reciprocal clock
  reg signed [31:0] xr, hdx_r;                     // Newton-Raphson estimate (Q2.29), half_den * x
  // srdhm operands: r = 0: half_den * -32/17; odd r: half_den * x; even r > 0: x * (1 - half_den * x);
  // S_OUT: scale * e
  wire signed [31:0] mul_a = (state == S_OUT) ? scale_r : (r == 3'd0 || r[0]) ? half_den : xr;
  wire signed [31:0] mul_b = (state == S_OUT) ? e : (r == 3'd0) ? -32'sd1010580540 :
                             r[0] ? xr : 32'sd536870912 - hdx_r;
  wire signed [31:0] p;
  axlab_tfl_srdhm u_mul (.a(mul_a), .b(mul_b), .y(p));
  // SaturatingRoundingMultiplyByPOT<2> of the step, the new estimate, then <1> of the last one
  wire signed [31:0] p4 = (p > 32'sd536870911) ? 32'sh7fffffff : (p < -32'sd536870911) ? 32'sh80000000 : (p <<< 2);
  wire signed [31:0] x_next = xr + p4;
  wire signed [31:0] scale = (x_next > 32'sd1073741823) ? 32'sh7fffffff :
                             (x_next < -32'sd1073741823) ? 32'sh80000000 : (x_next <<< 1);
  wire [5:0] expo = 6'd35 - headroom;              // (12 - headroom) + 31 - 8

  // ---- output code
  wire signed [31:0] rq;
  axlab_tfl_rdbpot u_div (.x(p), .e(expo_r[4:0]), .y(rq));
  wire signed [31:0] o = rq - 32'sd128;
  wire [7:0] q8 = (o > 32'sd127) ? 8'd127 : (o < -32'sd128) ? 8'h80 : o[7:0];
  wire [31:0] out_addr = OUT_BASE + i;

  always @(posedge clk) begin
    done <= 1'b0;
    we <= 1'b0;
    if (rst) state <= S_IDLE;
    else case (state)
      S_IDLE: if (start) begin
        state <= S_MAX;
        i <= 0; ph <= 1'b0; mx <= -8'sd128; sum <= 0;
      end
      S_MAX: begin
        if (x > mx) mx <= x;
        if (i == N - 1) begin
          i <= 0;
          state <= S_SUM;
        end else i <= i + 1;
      end
      S_SUM: begin
        ph <= ~ph;
        if (!ph) x_r <= x;
        else begin
          sum <= sum + e_acc;
          if (i == N - 1) begin
            i <= 0;
            r <= 3'd0;
            state <= S_RECIP;
          end else i <= i + 1;
        end
      end
      S_RECIP: begin
        r <= r + 3'd1;
        if (r == 3'd0) begin
          xr <= 32'sd1515870810 + p;               // 48/17 - 32/17 * half_den
          expo_r <= expo;
        end else if (r[0]) hdx_r <= p;
        else begin
          xr <= x_next;
          if (r == 3'd6) begin
            scale_r <= scale;
            state <= S_OUT;
          end
        end
      end
      S_OUT: begin
        ph <= ~ph;
        if (!ph) x_r <= x;
        else begin
          we <= 1'b1;
          waddr <= out_addr[AW-1:0];
          wdata <= q8;
          if (i == N - 1) begin
            state <= S_IDLE;
            done <= 1'b1;
          end else i <= i + 1;
        end
      end
      default: state <= S_IDLE;
    endcase
  end
endmodule
