// axlab activation RAM: bytes, one write port (rising edge) and one synchronous read port
// clocked on the falling edge. The read address, set up by the engines after a rising edge,
// is registered half a clock later, so the data is there before the next rising edge: the
// engines see the timing of an asynchronous read (same cycle counts), while synthesis maps the
// memory to block RAM (EBR on ECP5, SB_RAM40_4K on iCE40), which has registered reads only.
module axlab_act_ram #(
    parameter integer DEPTH = 1,
    parameter integer AW = 1
) (
    input  wire          clk,
    input  wire          we,
    input  wire [AW-1:0] waddr,
    input  wire [7:0]    wdata,
    input  wire [AW-1:0] raddr,
    output reg  [7:0]    rdata
);
  reg [7:0] mem [0:DEPTH-1];
  always @(posedge clk) if (we) mem[waddr] <= wdata;
  always @(negedge clk) rdata <= mem[raddr];
endmodule
