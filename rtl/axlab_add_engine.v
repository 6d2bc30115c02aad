// axlab residual-add engine (Verilog-2005, synthesizable): element-wise requantised add of
// two int8 code tensors of N elements,
//   out = clamp((((a - ZA) * MA + (b - ZB) * MB + 2^(SHIFT-1)) >>> SHIFT) + ZO, LO, 127)
// (MA, MB fixed-point scale ratios with SHIFT fractional bits). Two RAM reads per element.
module axlab_add_engine #(
    parameter integer N = 1,
    parameter integer AW = 16,
    parameter integer A_BASE = 0, B_BASE = 0, OUT_BASE = 0,
    parameter integer ZA = 0, ZB = 0, ZO = 0, LO = -128,
    parameter integer MA = 1, MB = 1, SHIFT = 20
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
  localparam [7:0] LO8 = LO & 255;
  reg [1:0]  state;
  reg [31:0] i;
  reg signed [7:0] a_r;
  wire signed [7:0] b = rdata;
  wire [31:0] addr = (state == S_RB ? B_BASE : A_BASE) + i;
  assign raddr = addr[AW-1:0];
  wire signed [9:0] da = a_r - ZA;  // |code - zero point| <= 255
  wire signed [9:0] db = b - ZB;
  wire signed [63:0] s = da * MA + db * MB + (64'sd1 <<< (SHIFT - 1));
  wire signed [63:0] v = (s >>> SHIFT) + ZO;
  wire [7:0] q8 = (v < LO) ? LO8 : (v > 127) ? 8'd127 : v[7:0];
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
