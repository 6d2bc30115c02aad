// a translate_off metacomment hides code from a synthesizer, not from a simulator
module mul2u_evil (A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  // synopsys translate_off
  wire hidden;
  // synopsys translate_on
  assign O = {A[1] & B[1] & A[0] & B[0], A[1] & B[1] & ~(A[0] & B[0]), A[1] & B[0] ^ A[0] & B[1], A[0] & B[0]};
endmodule
