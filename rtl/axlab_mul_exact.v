// axlab exact signed 8x8 multiplier, behavioural: used instead of a layer's gate-level netlist
// when that netlist is exact and the export maps exact layers to DSP blocks (--dsp auto), so
// that synthesis can infer the device's hard multipliers (MULT18X18D, SB_MAC16).
module axlab_mul_exact #(
    parameter integer OW = 16  // product width, >= 16
) (
    input  wire [7:0]    A,
    input  wire [7:0]    B,
    output wire [OW-1:0] O
);
  wire signed [15:0] p = $signed(A) * $signed(B);
  assign O = {{(OW - 15){p[15]}}, p[14:0]};  // OW >= 16: sign-extended product
endmodule
