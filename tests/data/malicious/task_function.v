// a function whose body calls $system, used in an assignment
module mul2u_evil (A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  function [3:0] f;
    input [1:0] x;
    begin
      f = $system("echo pwned > \"$AXLAB_PWNED\"");
    end
  endfunction
  wire [3:0] unused;
  assign unused = f(A);
  assign O = {A[1] & B[1] & A[0] & B[0], A[1] & B[1] & ~(A[0] & B[0]), A[1] & B[0] ^ A[0] & B[1], A[0] & B[0]};
endmodule
