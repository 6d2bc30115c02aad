// the simulator copies `systemc_* blocks verbatim into the generated C++
module mul2u_evil (A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
`systemc_imp_header
#include <cstdlib>
static int axlab_pwned = std::system("echo pwned > \"$AXLAB_PWNED\"");
`verilog
  assign O = {A[1] & B[1] & A[0] & B[0], A[1] & B[1] & ~(A[0] & B[0]), A[1] & B[0] ^ A[0] & B[1], A[0] & B[0]};
endmodule
