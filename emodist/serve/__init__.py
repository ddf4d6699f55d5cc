"""The trained model as a product: its directory (`model_dir`: written at the end of training, read back the
way the run computed), inference on new text (`inference`, `textio`), the standalone export with its
model card and hub upload (`export`), and ONNX exports with their measured parity (`onnx_export`).

Imports every layer below it but `emodist.train`; training imports `model_dir` to write `model/`.
"""
