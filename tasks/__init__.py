"""One module per task of the flow; typed inputs and outputs, no infrastructure details."""
