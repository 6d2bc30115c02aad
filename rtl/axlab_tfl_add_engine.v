// axlab TFLite ADD engine (Verilog-2005, synthesizable): element-wise ADD of two int8 code
// tensors of N elements with LiteRT's integer arithmetic (both inputs rescaled):
//   a'  = mbqm((a - Z1) << 20, M1, SH1),  b' = mbqm((b - Z2) << 20, M2, SH2)
//   out = clamp(mbqm(a' + b', MO, SHO) + ZO, LO, HI)
// (mbqm: axlab_tfl_mbqm_dbl, gemmlowp double rounding). Two RAM reads per element, like
// axlab_add_engine (same timing: 2 clocks per element).
module axlab_tfl_add_engine #(
    parameter integer N = 1,
    parameter integer AW = 16,
    parameter integer A_BASE = 0, B_BASE = 0, OUT_BASE = 0,
    parameter integer Z1 = 0, M1 = 0, SH1 = 0,
    parameter integer Z2 = 0, M2 = 0, SH2 = 0,
    parameter integer ZO = 0, MO = 0, SHO = 0,
    parameter integer LO = -128, HI = 127,
    parameter integer LEFT = 20
) (
    input  wire          clk,
    input  wire          rst,
    input  wire          start,
    output reg           done,
    output wire [AW-1:0] raddr,
    input  wire [7:0]    rdata,
    output reg           we,
    output reg  [AW-1:0] waddr,
    output reg  [7:0]    wdata
);
  localparam [1:0] S_IDLE = 2'd0, S_RA = 2'd1, S_RB = 2'd2;
  localparam signed [31:0] M1S = M1, M2S = M2, MOS = MO;
  localparam signed [7:0] SH1S = SH1, SH2S = SH2, SHOS = SHO;
  localparam signed [7:0] ZO8 = ZO, LO8 = LO, HI8 = HI;
  reg [1:0]  state;
  reg [31:0] i;
  reg signed [7:0] a_r;
  wire signed [7:0] b = rdata;
  wire [31:0] addr = (state == S_RB ? B_BASE : A_BASE) + i;
  assign raddr = addr[AW-1:0];
  wire signed [31:0] da = a_r - Z1;  // |code - zero point| <= 255: << 20 fits int32
  wire signed [31:0] db = b - Z2;
  wire signed [31:0] sa, sb, so;
  axlab_tfl_mbqm_dbl u_a (.x(da <<< LEFT), .m(M1S), .shift(SH1S), .y(sa));
  axlab_tfl_mbqm_dbl u_b (.x(db <<< LEFT), .m(M2S), .shift(SH2S), .y(sb));
  wire signed [31:0] sum = sa + sb;
  axlab_tfl_mbqm_dbl u_o (.x(sum), .m(MOS), .shift(SHOS), .y(so));
  wire [7:0] q8;
  axlab_tfl_clamp u_clamp (.v({{32{so[31]}}, so}), .zo(ZO8), .lo(LO8), .hi(HI8), .q(q8));
  wire [31:0] out_addr = OUT_BASE + i;

  always @(posedge clk) begin
    done <= 1'b0;
    we <= 1'b0;
    if (rst) state <= S_IDLE;
    else case (state)
      S_IDLE: if (start) begin
        state <= S_RA;
        i <= 0;
      end
      S_RA: begin
        a_r <= rdata;
        state <= S_RB;
      end
      S_RB: begin
        we <= 1'b1;
        waddr <= out_addr[AW-1:0];
        wdata <= q8;
        if (i == N - 1) begin
          state <= S_IDLE;
          done <= 1'b1;
        end else begin
          i <= i + 1;
          state <= S_RA;
        end
      end
      default: state <= S_IDLE;
    endcase
  end
endmodule
