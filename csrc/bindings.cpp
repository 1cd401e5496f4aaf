// ltl_ext._C: the import handle (loading it registers every TORCH_LIBRARY op) and build information.
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <string>

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
