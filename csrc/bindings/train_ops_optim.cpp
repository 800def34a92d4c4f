// train_ops_optim.cpp — Python binding of the fused optimizer step (cpu/optim_update.h):
// OptimPlan checks and holds the arrays of one optimizer's parameters once (values, gradients,
// slots), and each step() passes their pointers to the kernel with the step's scalars. The
// Python side (fastrnn/optim.py) keeps a plan while the parameter arrays stay the same objects.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "fastrnn.h"

namespace py = pybind11;

namespace {

using farr = py::array_t<float, py::array::c_style>;

// The array at list[i], checked: a float32 C-contiguous NumPy array of `n` elements (n < 0: any).
py::array checked(const py::handle& obj, const char* name, size_t i, int64_t n, bool writeable) {
  const std::string who = std::string(name) + "[" + std::to_string(i) + "]";
  if (!py::isinstance<py::array>(obj)) throw py::type_error(who + ": expected a NumPy array");
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().equal(py::dtype::of<float>())) throw py::type_error(who + ": expected dtype float32");
  if (!(a.flags() & py::array::c_style)) throw py::value_error(who + ": expected a C-contiguous array");
  if (writeable && !a.writeable()) throw py::value_error(who + ": the array must be writeable");
  if (n >= 0 && (int64_t)a.size() != n)
    throw py::value_error(who + ": expected " + std::to_string(n) + " elements, got " + std::to_string(a.size()));
  return a;
}

class OptimPlan {
 public:
  OptimPlan(int kind, const py::list& values, const py::list& grads, const py::list& s0, const py::list& s1,
            const py::list& s2, const std::vector<uint8_t>& decay_mask) {
    if (kind < 0 || kind > 2) throw py::value_error("kind: expected 0 (SGD), 1 (RMSprop) or 2 (Adam)");
    kind_ = static_cast<fastrnn::OptimKind>(kind);
    const size_t P = values.size();
    if (grads.size() != P) throw py::value_error("grads: expected one gradient per value");
    for (size_t i = 0; i < P; ++i) {
      py::array w = checked(values[i], "values", i, -1, true);
      const int64_t n = (int64_t)w.size();
      py::array g = checked(grads[i], "grads", i, n, false);
      w_.push_back(static_cast<float*>(w.mutable_data()));
      g_.push_back(static_cast<const float*>(g.data()));
      n_.push_back(n);
      keep_.push_back(w);
      keep_.push_back(g);
    }
    take_slots(s0, "s0", s0_);
    take_slots(s1, "s1", s1_);
    take_slots(s2, "s2", s2_);
    if (!decay_mask.empty() && decay_mask.size() != P) throw py::value_error("decay_mask: expected one flag per value");
    decay_ = decay_mask;
    blocks_.resize((size_t)fastrnn::optim_blocks(n_.data(), (int64_t)P));
    sumsq_.assign(P, 0.0);
    scales_.assign(P, 1.0f);
  }

  // One step; returns the gradients' sums of squares when a norm clipping ran (else None).
  py::object step(bool nesterov, bool momentum, bool centered, bool torch_eps, bool amsgrad, int clip, double clip_arg,
                  double a, double b, double c, double d, double e, double f, double h, double decay) {
    if (clip < 0 || clip > 3) throw py::value_error("clip: expected 0 (none), 1 (value), 2 (norm) or 3 (global norm)");
    const bool need0 = kind_ != fastrnn::OptimKind::SGD || momentum;
    const bool need1 = kind_ == fastrnn::OptimKind::ADAM || (kind_ == fastrnn::OptimKind::RMSPROP && centered);
    const bool need2 = (kind_ == fastrnn::OptimKind::ADAM && amsgrad) ||
                       (kind_ == fastrnn::OptimKind::RMSPROP && momentum);
    const size_t P = w_.size();
    if (P && ((need0 && s0_.empty()) || (need1 && s1_.empty()) || (need2 && s2_.empty())))
      throw py::value_error("slots: the plan lacks a slot this configuration updates");
    fastrnn::OptimArgs x{};
    x.kind = kind_;
    x.P = (int64_t)P;
    x.w = w_.data(), x.g = g_.data(), x.n = n_.data();
    x.s0 = need0 ? s0_.data() : nullptr;
    x.s1 = need1 ? s1_.data() : nullptr;
    x.s2 = need2 ? s2_.data() : nullptr;
    x.decay_mask = decay_.empty() ? nullptr : decay_.data();
    x.nesterov = nesterov, x.momentum = momentum, x.centered = centered, x.torch_eps = torch_eps, x.amsgrad = amsgrad;
    x.clip = static_cast<fastrnn::ClipKind>(clip);
    x.clip_arg = clip_arg;
    x.a = (float)a, x.b = (float)b, x.c = (float)c, x.d = (float)d, x.e = (float)e, x.f = (float)f, x.h = (float)h;
    x.decay = (float)decay;
    x.sumsq = sumsq_.data(), x.block_sums = blocks_.data(), x.scales = scales_.data();
    x.threads = fastrnn::get_num_threads();
    {
      py::gil_scoped_release release;
      fastrnn::active_kernels().optim_update(x);
    }
    if (clip == 2 || clip == 3) return py::cast(sumsq_);
    return py::none();
  }

  size_t size() const { return w_.size(); }

 private:
  void take_slots(const py::list& lst, const char* name, std::vector<float*>& out) {
    if (lst.size() == 0) return;
    if (lst.size() != n_.size()) throw py::value_error(std::string(name) + ": expected one slot array per value");
    for (size_t i = 0; i < lst.size(); ++i) {
      py::array s = checked(lst[i], name, i, n_[i], true);
      out.push_back(static_cast<float*>(s.mutable_data()));
      keep_.push_back(s);
    }
  }

  fastrnn::OptimKind kind_;
  std::vector<py::array> keep_;  // the arrays stay alive as long as the plan
  std::vector<float*> w_, s0_, s1_, s2_;
  std::vector<const float*> g_;
  std::vector<int64_t> n_;
  std::vector<uint8_t> decay_;
  std::vector<double> blocks_, sumsq_;
  std::vector<float> scales_;
};

}  // namespace

void register_train_ops_optim(py::module_& m) {
  py::class_<OptimPlan>(m, "OptimPlan",
                        "The arrays of one fused optimizer step, checked once: values, gradients and slot lists "
                        "(float32, C-contiguous; empty slot lists for the slots a configuration lacks).")
      .def(py::init<int, const py::list&, const py::list&, const py::list&, const py::list&, const py::list&,
                    const std::vector<uint8_t>&>(),
           py::arg("kind"), py::arg("values"), py::arg("grads"), py::arg("s0"), py::arg("s1"), py::arg("s2"),
           py::arg("decay_mask"))
      .def("step", &OptimPlan::step, py::arg("nesterov"), py::arg("momentum"), py::arg("centered"),
           py::arg("torch_eps"), py::arg("amsgrad"), py::arg("clip"), py::arg("clip_arg"), py::arg("a"),
           py::arg("b"), py::arg("c"), py::arg("d"), py::arg("e"), py::arg("f"), py::arg("h"), py::arg("decay"),
           "One update of every parameter of the plan (see OptimArgs in train_ops.h for the scalars); "
           "returns the gradients' sums of squares (float64) when clip is 2 or 3, else None.")
      .def("__len__", &OptimPlan::size);
}
