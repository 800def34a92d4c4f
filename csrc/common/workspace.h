// workspace.h — lays out a caller-owned workspace, for the CPU and the CUDA kernels alike.
//
// Each pass describes its workspace ONCE, as a function that takes the pieces in order from a
// WorkspaceLayout: called with a null base it only adds up the sizes (the *_workspace_floats
// functions), called with the caller's buffer it also hands out the pointers (the kernels). So
// the size asked for and the pieces carved can never disagree.
#pragma once
#include <cstddef>

namespace fastrnn {

class WorkspaceLayout {
 public:
  explicit WorkspaceLayout(float* base) : base_(base) {}
  // The next n floats (nullptr when only sizing).
  float* take(size_t n) {
    float* p = base_ ? base_ + used_ : nullptr;
    used_ += n;
    return p;
  }
  // Floats taken so far.
  size_t floats() const { return used_; }

 private:
  float* base_;
  size_t used_ = 0;
};

}  // namespace fastrnn
