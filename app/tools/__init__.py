"""Build-time tools: ONNX export, fusion and int8 quantisation, random checkpoints, generated
cases. Run from the command line, the image build and the benchmark; serving never imports them."""
