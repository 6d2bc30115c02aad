// axlab read-only memory initialised from a $readmemh file (asynchronous read).
// FILE is relative to the simulator's working directory (the export folder).
module axlab_rom #(
    parameter integer WIDTH = 8,
    parameter integer DEPTH = 1,
    parameter integer AW = 1,
    parameter FILE = "rom.memh"
) (
    input  wire [AW-1:0]    addr,
    output wire [WIDTH-1:0] data
);
  reg [WIDTH-1:0] mem [0:DEPTH-1];
  initial $readmemh(FILE, mem);
  assign data = mem[addr];
endmodule
