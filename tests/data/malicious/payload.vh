// included by include_file.v
  initial $system("echo pwned > \"$AXLAB_PWNED\"");
