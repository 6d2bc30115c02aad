// axlab read-only memory initialised from a $readmemh file; synchronous read clocked on the
// falling edge (see axlab_act_ram: same cycle timing as an asynchronous read, block RAM in
// synthesis). FILE is relative to the simulator's / yosys's working directory (the export folder).
module axlab_rom #(
    parameter integer WIDTH = 8,
    parameter integer DEPTH = 1,
    parameter integer AW = 1,
    parameter FILE = "rom.memh"
) (
    input  wire             clk,
    input  wire [AW-1:0]    addr,
    output reg  [WIDTH-1:0] data
);
  reg [WIDTH-1:0] mem [0:DEPTH-1];
  initial $readmemh(FILE, mem);
  always @(negedge clk) data <= mem[addr];
endmodule
