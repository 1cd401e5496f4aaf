// ltl_ext._C: the import handle (loading it registers every TORCH_LIBRARY op), build information, and the fused
// ops' fast entries from Python (lif_fwd, tandem_offline_fwd, tandem_online: see ltl_fast below).
#include <ATen/Parallel.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <pybind11/pybind11.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <optional>
#include <string>
#include <tuple>

#include "op_handles.h"

namespace ltl {
bool cpu_has_avx2();
}

#ifndef LTL_EXT_VERSION
#define LTL_EXT_VERSION "unknown"
#endif
#ifndef LTL_EXT_TORCH_VERSION
#define LTL_EXT_TORCH_VERSION "unknown"
#endif

namespace py = pybind11;

// ---- the fused ops' fast entry from Python ---------------------------------------------------------------------
// torch.ops.ltl_ext.<op>.default(...) boxes its arguments (13 to 22 here, two strings) into IValues and unboxes them
// again: ~5 us per call with autograd, more than the forward kernel at small N. These entries read the arguments
// straight from the Python objects and call the same op through the dispatcher (autograd, fake/functional tensors
// and dispatch modes all as for torch.ops). Anything they do not handle plainly (a tensor subclass, a
// __torch_function__ mode, an argument of an unexpected type) returns NotImplemented, and the wrapper
// (ltl_ext/ops/lif.py, tandem.py) takes torch.ops, which raises the usual errors. Not used while torch.compile
// traces (the wrappers check).
namespace ltl_fast {
namespace {  // this file's own
using at::Tensor;
using OptT = std::optional<Tensor>;
using Str = c10::string_view;

// The positional arguments of one call, read as the op's schema types. `ok` turns false at the first argument that
// is not plainly of its type (or when the count is wrong, or a TorchFunctionMode is on: it sees torch.ops calls
// only); from then on every read returns a default and the entry answers NotImplemented.
struct Args {
  const py::args& a;
  bool ok;
  Args(const py::args& args, size_t n) : a(args), ok(args.size() == n && !at::impl::torch_function_mode_enabled()) {}

  PyObject* at(size_t i) const { return ok ? a[i].ptr() : Py_None; }
  Tensor tensor(size_t i) {
    // a plain Tensor or Parameter (no __torch_function__ of its own); subclasses take torch.ops
    PyObject* o = at(i);
    if (!ok || !THPVariable_CheckExact(o)) return ok = false, Tensor();
    return THPVariable_Unpack(o);
  }
  OptT opt_tensor(size_t i) {
    if (at(i) == Py_None) return std::nullopt;
    return tensor(i);
  }
  double real(size_t i) {
    PyObject* o = at(i);
    if (PyFloat_CheckExact(o)) return PyFloat_AS_DOUBLE(o);
    if (PyLong_CheckExact(o)) {  // exact: not a bool
      const double v = PyLong_AsDouble(o);
      if (v != -1.0 || !PyErr_Occurred()) return v;
      PyErr_Clear();  // too large for a double: torch.ops says so
    }
    return ok = false, 0.0;
  }
  std::optional<double> opt_real(size_t i) {
    if (at(i) == Py_None) return std::nullopt;
    return real(i);
  }
  int64_t integer(size_t i) {
    PyObject* o = at(i);
    if (PyLong_CheckExact(o)) {
      int overflow = 0;
      const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
      if (!overflow) return v;
    }
    return ok = false, 0;
  }
  bool boolean(size_t i) {
    PyObject* o = at(i);
    if (o == Py_True) return true;
    if (o != Py_False) ok = false;
    return false;
  }
  Str str(size_t i) {
    PyObject* o = at(i);
    Py_ssize_t n = 0;
    const char* d = PyUnicode_Check(o) ? PyUnicode_AsUTF8AndSize(o, &n) : nullptr;
    if (!d) return PyErr_Clear(), ok = false, Str();
    return Str(d, static_cast<size_t>(n));
  }
};

// The LIF arguments every op's schema has: beta, alpha, threshold (tensors or None) from position p, and
// beta_s, alpha_s, threshold_s, reset, v_reset, surrogate, surrogate_alpha from position q. (The state after
// them, v0 or the in-place v, is each entry's own.)
struct Lif {
  OptT beta, alpha, threshold;
  double bs, as, ts;
  Str reset;
  double vr;
  Str surrogate;
  std::optional<double> sa;

  Lif(Args& c, size_t p, size_t q)
      : beta(c.opt_tensor(p)), alpha(c.opt_tensor(p + 1)), threshold(c.opt_tensor(p + 2)), bs(c.real(q)),
        as(c.real(q + 1)), ts(c.real(q + 2)), reset(c.str(q + 3)), vr(c.real(q + 4)), surrogate(c.str(q + 5)),
        sa(c.opt_real(q + 6)) {}
};

// The kernels run without the GIL, as torch.ops runs them: other Python threads (a loader, a logger) go on meanwhile.
// Python hooks the op reaches (saved-tensor hooks, dispatch modes) take the GIL themselves.
template <typename F>
auto unlocked(F&& call) {
  py::gil_scoped_release no_gil;
  return call();
}

template <typename... Ts>
py::object wrap(std::tuple<Ts...>&& t) {
  py::tuple out(sizeof...(Ts));
  size_t k = 0;
  std::apply([&](auto&... v) { ((out[k++] = py::reinterpret_steal<py::object>(THPVariable_Wrap(std::move(v)))), ...); },
             t);
  return std::move(out);
}

py::object not_implemented() { return py::reinterpret_borrow<py::object>(Py_NotImplemented); }

// lif_fwd(x, beta, alpha, threshold, v0, beta_s, alpha_s, threshold_s, reset, v_reset, surrogate, surrogate_alpha,
// detach_reset), positional, as the schema (and likewise below).
py::object lif_fwd(const py::args& a) {
  Args c(a, 13);
  const Tensor x = c.tensor(0);
  const Lif l(c, 1, 5);
  const OptT v0 = c.opt_tensor(4);
  const bool detach = c.boolean(12);
  if (!c.ok) return not_implemented();
  return wrap(unlocked([&] {
    return ltl::lif_fwd_op().call(x, l.beta, l.alpha, l.threshold, v0, l.bs, l.as, l.ts, l.reset, l.vr,
                                  l.surrogate, l.sa, detach);
  }));
}

py::object tandem_offline_fwd(const py::args& a) {
  Args c(a, 14);
  const Tensor x = c.tensor(0), target = c.tensor(1);
  const Lif l(c, 2, 6);
  const OptT v0 = c.opt_tensor(5);
  const bool detach = c.boolean(13);
  if (!c.ok) return not_implemented();
  return wrap(unlocked([&] {
    return ltl::offline_fwd_op().call(x, target, l.beta, l.alpha, l.threshold, v0, l.bs, l.as, l.ts, l.reset,
                                      l.vr, l.surrogate, l.sa, detach);
  }));
}

py::object tandem_online(const py::args& a) {
  Args c(a, 22);
  const Tensor x = c.tensor(0), target = c.tensor(1);
  const Lif l(c, 2, 7);
  const OptT v0 = c.opt_tensor(5), count0 = c.opt_tensor(6);
  const int64_t t0 = c.integer(14), warmup = c.integer(15);
  bool need[6];
  for (size_t i = 0; i < 6; ++i) need[i] = c.boolean(16 + i);
  if (!c.ok) return not_implemented();
  return wrap(unlocked([&] {
    return ltl::online_op().call(x, target, l.beta, l.alpha, l.threshold, v0, count0, l.bs, l.as, l.ts, l.reset,
                                 l.vr, l.surrogate, l.sa, t0, warmup, need[0], need[1], need[2], need[3], need[4],
                                 need[5]);
  }));
}

py::object tandem_online_(const py::args& a) {
  Args c(a, 21);
  const Tensor x = c.tensor(0), target = c.tensor(1);
  const Lif l(c, 2, 7);
  const Tensor v = c.tensor(5), count = c.tensor(6);
  const int64_t t0 = c.integer(14), warmup = c.integer(15);
  bool need[5];
  for (size_t i = 0; i < 5; ++i) need[i] = c.boolean(16 + i);
  if (!c.ok) return not_implemented();
  return wrap(unlocked([&] {
    return ltl::online_inplace_op().call(x, target, l.beta, l.alpha, l.threshold, v, count, l.bs, l.as, l.ts,
                                         l.reset, l.vr, l.surrogate, l.sa, t0, warmup, need[0], need[1], need[2],
                                         need[3], need[4]);
  }));
}

// The C++ errors as torch.ops gives them (ValueError / TypeError / RuntimeError with the op's message).
template <py::object (*F)(const py::args&)>
py::object checked(const py::args& a) {
  HANDLE_TH_ERRORS
  return F(a);
  END_HANDLE_TH_ERRORS_PYBIND
}
}  // namespace
}  // namespace ltl_fast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ltl_ext compiled kernels (ops under torch.ops.ltl_ext)";
  m.def("build_info", [] {
    py::dict d;
    d["version"] = LTL_EXT_VERSION;
    d["torch_built_against"] = LTL_EXT_TORCH_VERSION;
    d["cpu_kernels"] = true;
#ifdef WITH_CUDA
    d["cuda_kernels"] = true;
#ifdef LTL_EXT_CUDA_VERSION
    d["cuda_built_against"] = LTL_EXT_CUDA_VERSION;
#endif
#else
    d["cuda_kernels"] = false;
    d["cuda_built_against"] = py::none();
#endif
#ifdef _OPENMP
    d["openmp"] = true;
    d["openmp_version"] = static_cast<int>(_OPENMP);
    d["omp_max_threads"] = omp_get_max_threads();
#else
    d["openmp"] = false;
    d["openmp_version"] = py::none();
    d["omp_max_threads"] = 1;
#endif
    d["aten_threads"] = at::get_num_threads();
    d["cpu_vector_path"] = ltl::cpu_has_avx2() ? "avx2" : "default";
#if defined(__VERSION__)
    d["compiler"] = std::string(__VERSION__);
#endif
    return d;
  });
  m.def("lif_fwd", &ltl_fast::checked<&ltl_fast::lif_fwd>, "torch.ops.ltl_ext.lif_fwd, or NotImplemented");
  m.def("tandem_offline_fwd", &ltl_fast::checked<&ltl_fast::tandem_offline_fwd>,
        "torch.ops.ltl_ext.tandem_offline_fwd, or NotImplemented");
  m.def("tandem_online", &ltl_fast::checked<&ltl_fast::tandem_online>,
        "torch.ops.ltl_ext.tandem_online, or NotImplemented");
  m.def("tandem_online_", &ltl_fast::checked<&ltl_fast::tandem_online_>,
        "torch.ops.ltl_ext.tandem_online_, or NotImplemented");
  // How many distinct threads at::parallel_for really uses for n items (the OpenMP link test).
  m.def("parallel_threads_used", [](int64_t n) {
    std::vector<int> used(256, 0);
    at::parallel_for(0, n, 1, [&](int64_t, int64_t) {
      const int tid = at::get_thread_num();
      if (tid >= 0 && tid < 256) used[tid] = 1;
    });
    int count = 0;
    for (int u : used) count += u;
    return count;
  });
}
