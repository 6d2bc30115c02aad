// axlab conv/dense layer engine (Verilog-2005, synthesizable).
//
// Computes one conv or dense layer of the integer network, P output channels at a time:
//   acc[co] = sum_k MUL(a_k, w_k[co]) + const[co]              (int32, MUL = the layer's netlist)
//   out     = clamp(((acc * m0[co] + 2^(rs[co]-1)) >>> rs[co]) + ZO, LO, 127)   (axlab_requant,
//             outside this module: one requantiser serves every layer)
// a_k is the int8 activation code (ZA where the window is in the zero padding), w_k the int8
// weight code; const[co] = bias_q - ZA * sum_k w_k (precomputed by axlab export).
// Loop order: channel group g, output row oy, column ox, then k = (ci, ky, kx) with one
// multiply-accumulate per lane per clock, then P epilogue clocks (one output byte each).
// Dense layers are 1x1 "convs" over a (C, 1, 1) input. Tensors are CHW byte arrays in an
// external activation RAM (asynchronous read port, registered write port).
// The P multipliers live outside this module (mul_a/mul_b/mul_o) so that the generated top
// can instantiate the layer's own netlist; weights and per-channel parameters come from
// external ROMs: w_data holds lane l's weight in bits [8l+7:8l] of word g*K + k,
// q_data = {rs[7:0], m0[31:0], const[31:0]} of channel q_addr.
module axlab_conv_engine #(
    parameter integer C = 1, H = 32, W = 32,      // input tensor
    parameter integer CO = 32, HO = 30, WO = 30,  // output tensor
    parameter integer KH = 3, KW = 3, SH = 1, SW = 1, PH = 0, PW = 0,
    parameter integer P = 8,                      // output-channel lanes
    parameter integer OW = 16,                    // multiplier product width (signed)
    parameter integer AW = 16,                    // activation RAM address width
    parameter integer WAW = 16,                   // weight ROM address width
    parameter integer QAW = 8,                    // parameter ROM address width
    parameter integer IN_BASE = 0, OUT_BASE = 0,  // tensor base addresses in the RAM
    parameter integer ZA = 0, ZO = 0, LO = -128   // zero points; LO = ZO when ReLU is fused
) (
    input  wire              clk,
    input  wire              rst,
    input  wire              start,
    output reg               done,
    output wire [AW-1:0]     raddr,
    input  wire [7:0]        rdata,
    output reg               we,
    output reg  [AW-1:0]     waddr,
    output reg  [7:0]        wdata,
    output wire [WAW-1:0]    w_addr,
    input  wire [8*P-1:0]    w_data,
    output wire [QAW-1:0]    q_addr,
    input  wire [71:0]       q_data,
    output wire signed [31:0] epi_acc,            // to the requantiser: acc + const
    output wire [39:0]       epi_scale,            // {rs, m0} of channel q_addr
    input  wire [7:0]        epi_q,                // requantised output code
    output wire [7:0]        mul_a,
    output wire [8*P-1:0]    mul_b,
    input  wire [OW*P-1:0]   mul_o
);
  localparam integer K = C * KH * KW;
  localparam integer NG = (CO + P - 1) / P;
  localparam [1:0] S_IDLE = 2'd0, S_MAC = 2'd1, S_EPI = 2'd2;
  localparam [7:0] ZA8 = ZA & 255;

  reg [1:0]  state;
  reg [15:0] g, oy, ox, ci, ky, kx, lane;
  reg [31:0] k;

  // ---- operand fetch (combinational address, asynchronous RAM read)
  wire signed [31:0] oy_s = {16'd0, oy};
  wire signed [31:0] ox_s = {16'd0, ox};
  wire signed [31:0] ky_s = {16'd0, ky};
  wire signed [31:0] kx_s = {16'd0, kx};
  wire signed [31:0] ci_s = {16'd0, ci};
  wire signed [31:0] iy = oy_s * SH + ky_s - PH;
  wire signed [31:0] ix = ox_s * SW + kx_s - PW;
  wire inb = (iy >= 0) && (iy < H) && (ix >= 0) && (ix < W);
  wire signed [31:0] in_addr = IN_BASE + (ci_s * H + iy) * W + ix;
  assign raddr = inb ? in_addr[AW-1:0] : IN_BASE[AW-1:0];
  assign mul_a = inb ? rdata : ZA8;
  wire [31:0] widx = {16'd0, g} * K + k;
  assign w_addr = widx[WAW-1:0];
  assign mul_b = w_data;

  // ---- accumulators, one per lane
  wire [31:0] co = {16'd0, g} * P + {16'd0, lane};  // output channel of the epilogue lane
  wire last_lane = (lane == P - 1) || (co == CO - 1);
  wire clear = (state == S_IDLE) || (state == S_EPI && last_lane);
  wire [32*P-1:0] acc_bus;
  genvar l;
  generate
    for (l = 0; l < P; l = l + 1) begin : lanes
      reg signed [31:0] acc;
      wire signed [31:0] prod = {{(32 - OW){mul_o[l * OW + OW - 1]}}, mul_o[l * OW +: OW]};
      always @(posedge clk) begin
        if (rst || clear) acc <= 32'sd0;
        else if (state == S_MAC) acc <= acc + prod;
      end
      assign acc_bus[32 * l +: 32] = acc;
    end
  endgenerate

  // ---- epilogue: requantise lane `lane` (output channel co)
  assign q_addr = co[QAW-1:0];
  wire signed [31:0] acc_sel = acc_bus[32 * lane +: 32];
  wire signed [31:0] cst = q_data[31:0];
  wire signed [31:0] acc_c = acc_sel + cst;
  // the requantiser is shared by all layers (axlab_requant in the top level)
  assign epi_acc = acc_c;
  assign epi_scale = q_data[71:32];
  wire [7:0] q8 = epi_q;
  wire [31:0] out_addr = OUT_BASE + (co * HO + {16'd0, oy}) * WO + {16'd0, ox};

  wire last_k = (k == K - 1);
  always @(posedge clk) begin
    done <= 1'b0;
    we <= 1'b0;
    if (rst) begin
      state <= S_IDLE;
    end else begin
      case (state)
        S_IDLE: if (start) begin
          state <= S_MAC;
          g <= 0; oy <= 0; ox <= 0; ci <= 0; ky <= 0; kx <= 0; k <= 0; lane <= 0;
        end
        S_MAC: begin
          k <= last_k ? 32'd0 : k + 1;
          if (kx == KW - 1) begin
            kx <= 0;
            if (ky == KH - 1) begin
              ky <= 0;
              ci <= (ci == C - 1) ? 16'd0 : ci + 1;
            end else ky <= ky + 1;
          end else kx <= kx + 1;
          if (last_k) begin
            state <= S_EPI;
            lane <= 0;
          end
        end
        S_EPI: begin
          if (co < CO) begin
            we <= 1'b1;
            waddr <= out_addr[AW-1:0];
            wdata <= q8;
          end
          if (!last_lane) lane <= lane + 1;
          else begin
            lane <= 0;
            state <= S_MAC;
            if (ox == WO - 1) begin
              ox <= 0;
              if (oy == HO - 1) begin
                oy <= 0;
                if (g == NG - 1) begin
                  state <= S_IDLE;
                  done <= 1'b1;
                end else g <= g + 1;
              end else oy <= oy + 1;
            end else ox <= ox + 1;
          end
        end
        default: state <= S_IDLE;
      endcase
    end
  end
endmodule
