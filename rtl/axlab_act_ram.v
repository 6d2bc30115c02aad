// axlab activation RAM: bytes, one registered write port, one asynchronous read port.
module axlab_act_ram #(
    parameter integer DEPTH = 1,
    parameter integer AW = 1
) (
    input  wire          clk,
    input  wire          we,
    input  wire [AW-1:0] waddr,
    input  wire [7:0]    wdata,
    input  wire [AW-1:0] raddr,
    output wire [7:0]    rdata
);
  reg [7:0] mem [0:DEPTH-1];
  always @(posedge clk) if (we) mem[waddr] <= wdata;
  assign rdata = mem[raddr];
endmodule
