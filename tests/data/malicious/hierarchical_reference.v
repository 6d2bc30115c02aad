// a hierarchical reference reaches into the wrapper axlab builds around the netlist
module mul2u_evil (A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  wire t;
  assign t = axlab_lut_top.A[0];
  assign O = {A[1] & B[1] & A[0] & B[0], A[1] & B[1] & ~(A[0] & B[0]), A[1] & B[0] ^ A[0] & B[1], A[0] & B[0]};
endmodule
