// cell.h — what a recurrent cell is, for the CPU and the CUDA kernels alike: the cell ids, the
// number of gates, and the problem dimensions. Plain C++ (no CUDA headers), compiled by the host
// compiler and by nvcc.
//
// The ids are what Python passes (fastrnn/ops.py, fastrnn/_cuda_ops.py); do not renumber them.
//
// Adding a cell: give it an id and its gate count here; write its pointwise maths once per
// backend, as a specialisation of CellMath<C> in cpu/cells/<cell>.h (included by
// cpu/cells/cell_math.h) and of CudaCell<C> in cuda/cells/<cell>.cuh (included by
// cuda/cells/cell.cuh), with the equations and saved buffers in the file's head comment; add a
// case to the dispatch on the cell (forward / backward in cpu/kernels_impl.h, cuda/forward.cu,
// cuda/backward.cu) and to the workspace layouts where the cell needs extra pieces; accept the id
// in the bindings' cell checks.
#pragma once
#include <cstdint>

namespace fastrnn {

enum class Cell : int { RNN_TANH = 0, RNN_RELU = 1, LSTM = 2, GRU = 3 };

// Gates per hidden unit: SimpleRNN 1, LSTM 4 (i, f, g, o), GRU 3 (r, z, n).
constexpr int gate_count(Cell c) { return c == Cell::LSTM ? 4 : (c == Cell::GRU ? 3 : 1); }

// The same as a compile-time constant, usable in CUDA device code.
template <Cell C>
constexpr int kGates = C == Cell::LSTM ? 4 : (C == Cell::GRU ? 3 : 1);

// One recurrent layer's problem: the cell, the sizes, the layout of the sequences and the mask.
// The host helpers below give the conventions of fastrnn.h; the CUDA kernels have their own
// device-side copy of them (Seq in cuda/common.cuh).
struct Dims {
  Cell cell;
  int64_t T, B, I, H;
  bool batch_first;
  bool reverse;
  const uint8_t* mask;  // [B, T] (1 = valid) or nullptr (all valid)
  // Recurrent dropout: [B, H] or nullptr. The state fed to the recurrent product at every step is
  // h * hmask (the h_{t-1} W_hh^T term only; the cell's own use of h_{t-1}, GRU's z * h, is not
  // masked), and the backward pass multiplies the gradient of that product by it.
  const float* hmask = nullptr;
  int G() const { return gate_count(cell); }
  int64_t pos(int64_t t, int64_t b) const { return batch_first ? b * T + t : t * B + b; }
  int64_t time_of_step(int64_t s) const { return reverse ? T - 1 - s : s; }
  bool valid(int64_t t, int64_t b) const { return mask == nullptr || mask[b * T + t] != 0; }
};

}  // namespace fastrnn
