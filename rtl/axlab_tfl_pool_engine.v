// axlab TFLite pooling engine (Verilog-2005, synthesizable): AVERAGE_POOL_2D (AVG = 1) and
// MAX_POOL_2D (AVG = 0) on int8 codes of a CHW tensor, as LiteRT's reference kernels:
//   avg: the window clipped to the image (padding is not counted), cnt in-bounds codes,
//        out = (sum + cnt/2) / cnt if sum > 0 else (sum - cnt/2) / cnt  (C++ division truncates:
//        rounding half away from zero)
//   max: out = max over the window's in-bounds codes
// then clamped to the fused activation's range [LO, HI]. PH, PW: top and left padding (the
// bottom / right padding follows from HO, WO). Same timing as axlab_pool_engine: one RAM read per
// clock, one write clock per output.
module axlab_tfl_pool_engine #(
    parameter integer C = 1, H = 2, W = 2, HO = 1, WO = 1,
    parameter integer KH = 2, KW = 2, SH = 2, SW = 2, PH = 0, PW = 0,
    parameter integer AVG = 0,
    parameter integer LO = -128, HI = 127,
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
    output reg  [7:0]    wdata
);
  localparam [1:0] S_IDLE = 2'd0, S_ACC = 2'd1, S_WR = 2'd2;
  localparam signed [31:0] LO32 = LO, HI32 = HI;
  reg [1:0]  state;
  reg [15:0] c, oy, ox, ky, kx;
  reg signed [7:0]  mx;
  reg signed [31:0] sum;
  reg signed [31:0] cnt;

  wire signed [31:0] oy_s = {16'd0, oy};
  wire signed [31:0] ox_s = {16'd0, ox};
  wire signed [31:0] iy = oy_s * SH + $signed({16'd0, ky}) - PH;
  wire signed [31:0] ix = ox_s * SW + $signed({16'd0, kx}) - PW;
  wire inb = (iy >= 0) && (iy < H) && (ix >= 0) && (ix < W);
  wire signed [31:0] in_addr = IN_BASE + ($signed({16'd0, c}) * H + iy) * W + ix;
  assign raddr = inb ? in_addr[AW-1:0] : IN_BASE[AW-1:0];
  wire signed [7:0] x = rdata;

  wire signed [31:0] half = cnt >>> 1;
  wire signed [31:0] num = (sum > 0) ? sum + half : sum - half;
  wire signed [31:0] den = (cnt == 0) ? 32'sd1 : cnt;
  wire signed [31:0] avg = num / den;              // Verilog signed division truncates toward zero
  wire signed [31:0] v = AVG ? avg : {{24{mx[7]}}, mx};
  wire signed [31:0] vc = (v < LO32) ? LO32 : (v > HI32) ? HI32 : v;
  wire [31:0] out_addr = OUT_BASE + ({16'd0, c} * HO + {16'd0, oy}) * WO + {16'd0, ox};

  always @(posedge clk) begin
    done <= 1'b0;
    we <= 1'b0;
    if (rst) state <= S_IDLE;
    else case (state)
      S_IDLE: if (start) begin
        state <= S_ACC;
        c <= 0; oy <= 0; ox <= 0; ky <= 0; kx <= 0; mx <= -8'sd128; sum <= 0; cnt <= 0;
      end
      S_ACC: begin
        if (inb) begin
          if (x > mx) mx <= x;
          sum <= sum + x;
          cnt <= cnt + 1;
        end
        if (kx == KW - 1) begin
          kx <= 0;
          if (ky == KH - 1) begin
            ky <= 0;
            state <= S_WR;
          end else ky <= ky + 1;
        end else kx <= kx + 1;
      end
      S_WR: begin
        we <= 1'b1;
        waddr <= out_addr[AW-1:0];
        wdata <= vc[7:0];
        mx <= -8'sd128;
        sum <= 0;
        cnt <= 0;
        state <= S_ACC;
        if (ox == WO - 1) begin
          ox <= 0;
          if (oy == HO - 1) begin
            oy <= 0;
            if (c == C - 1) begin
              state <= S_IDLE;
              done <= 1'b1;
            end else c <= c + 1;
          end else oy <= oy + 1;
        end else ox <= ox + 1;
      end
      default: state <= S_IDLE;
    endcase
  end
endmodule
