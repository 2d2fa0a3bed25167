"""Activation functions as combinational circuits (Yang, Wei, Tu et al., "Design Space
Exploration of Neural Network Activation Function Circuits", TCAD 2018; demo code
ThomasMrY/ActivationFunctionDemo).

- `fixed_point`: fixed-point formats, the activation-function registry, designs
  (`tanh_i3f5_o1f7`) and their exhaustive truth tables.
- `minimize`: one two-level sum of products per output bit (espresso, through PyEDA).
- `pwl`: the piecewise-linear baseline's integer arithmetic.
- `verilog`: the SOP, LUT and PWL modules and an exhaustive testbench.
- `tools`: Icarus Verilog simulation, Yosys synthesis and the area model.
- `activation`: a bit-exact JAX activation evaluating the circuit.
- `report`: one design end to end (Verilog, verification log, area report).
"""
