// Operation graphs with the cuDNN backend API (see the header).
#ifdef STRATA_WITH_CUDA
#include "strata/backend/cuda/cudnn_graph.h"

#include <algorithm>

#include "strata/backend/cuda/context.h"
#include "strata/core/tensor.h"

namespace strata::cuda::cudnn_graph {

namespace {

// The handle attributes of the operation graph and the execution plan are
// required by cuDNN 9.0 and deprecated by later releases (which take the
// device from elsewhere): set them, and do not fail where a runtime refuses.
void set_handle(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name) {
  cudnnHandle_t h = cudnn();
  (void)cudnnBackendSetAttribute(d, name, CUDNN_TYPE_HANDLE, 1, &h);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
constexpr cudnnBackendAttributeName_t kGraphHandleAttr = CUDNN_ATTR_OPERATIONGRAPH_HANDLE;
constexpr cudnnBackendAttributeName_t kPlanHandleAttr = CUDNN_ATTR_EXECUTION_PLAN_HANDLE;
#pragma GCC diagnostic pop

}  // namespace

void must(cudnnStatus_t s, const char* step) {
  if (s != CUDNN_STATUS_SUCCESS) throw BuildError{std::string(step) + ": " + cudnnGetErrorString(s)};
}

// ------------------------------------------------------------ descriptors

Descs::~Descs() {
  for (auto it = list_.rbegin(); it != list_.rend(); ++it) (void)cudnnBackendDestroyDescriptor(*it);
}

cudnnBackendDescriptor_t Descs::make(cudnnBackendDescriptorType_t type, const char* what) {
  cudnnBackendDescriptor_t d = nullptr;
  must(cudnnBackendCreateDescriptor(type, &d), what);
  list_.push_back(d);
  return d;
}

void set_attr(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
              int64_t count, const void* values, const char* step) {
  must(cudnnBackendSetAttribute(d, name, type, count, values), step);
}

void set_desc(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendDescriptor_t value,
              const char* step) {
  set_attr(d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value, step);
}

// ------------------------------------------------------------ graph

T4 GraphBuilder::real(int64_t uid, cudnnDataType_t dt, const Dims& dims, const Dims& strides) {
  real_uids_.push_back(uid);
  return tensor(uid, dt, dims, strides, false, false);
}

T4 GraphBuilder::by_value(int64_t uid, cudnnDataType_t dt) {
  real_uids_.push_back(uid);
  return tensor(uid, dt, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
}

T4 GraphBuilder::virt(cudnnDataType_t dt, const Dims& dims, const Dims& strides) {
  return tensor(next_virtual_++, dt, dims, strides, true, false);
}

void GraphBuilder::pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t compute, const T4& x, const T4* b,
                             const T4* t, const T4& y, int64_t axis) {
  cudnnBackendDescriptor_t pw = d_.make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "pointwise descriptor");
  set_attr(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
  set_attr(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &compute, "pointwise math precision");
  if (axis >= 0) set_attr(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "pointwise axis");
  must(cudnnBackendFinalize(pw), "pointwise descriptor finalize");
  cudnnBackendDescriptor_t op = d_.make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, "pointwise operation");
  set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw, "pointwise op descriptor");
  set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x.desc, "pointwise x");
  set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y.desc, "pointwise y");
  const float one = 1.f;
  set_attr(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one, "pointwise alpha1");
  set_attr(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one, "pointwise alpha2");
  if (b != nullptr) set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b->desc, "pointwise b");
  if (t != nullptr) set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t->desc, "pointwise t");
  must(cudnnBackendFinalize(op), "pointwise operation finalize");
  ops_.push_back(op);
}

void GraphBuilder::matmul(const T4& a, const T4& b, const T4& c, const T4* m_override, const T4* n_override,
                          const T4* k_override) {
  cudnnBackendDescriptor_t mm = d_.make(CUDNN_BACKEND_MATMUL_DESCRIPTOR, "matmul descriptor");
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  set_attr(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, "matmul compute type");
  must(cudnnBackendFinalize(mm), "matmul descriptor finalize");
  cudnnBackendDescriptor_t op = d_.make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "matmul operation");
  set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a.desc, "matmul a");
  set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b.desc, "matmul b");
  set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c.desc, "matmul c");
  if (m_override) set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, m_override->desc, "matmul m");
  if (n_override) set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, n_override->desc, "matmul n");
  if (k_override) set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, k_override->desc, "matmul k");
  set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, mm, "matmul op descriptor");
  must(cudnnBackendFinalize(op), "matmul operation finalize");
  ops_.push_back(op);
}

void GraphBuilder::reduction(cudnnReduceTensorOp_t mode, const T4& x, const T4& y) {
  cudnnBackendDescriptor_t rd = d_.make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "reduction descriptor");
  const cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
  set_attr(rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode, "reduction operator");
  set_attr(rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32, "reduction compute type");
  must(cudnnBackendFinalize(rd), "reduction descriptor finalize");
  cudnnBackendDescriptor_t op = d_.make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "reduction operation");
  set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x.desc, "reduction x");
  set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y.desc, "reduction y");
  set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, rd, "reduction op descriptor");
  must(cudnnBackendFinalize(op), "reduction operation finalize");
  ops_.push_back(op);
}

void GraphBuilder::reshape(const T4& x, const T4& y) {
  cudnnBackendDescriptor_t op = d_.make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, "reshape operation");
  set_desc(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x.desc, "reshape x");
  set_desc(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y.desc, "reshape y");
  must(cudnnBackendFinalize(op), "reshape operation finalize");
  ops_.push_back(op);
}

cudnnBackendDescriptor_t GraphBuilder::finish() {
  cudnnBackendDescriptor_t g = d_.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
  set_attr(g, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, int64_t(ops_.size()), ops_.data(),
           "operation graph ops");
  set_handle(g, kGraphHandleAttr);
  must(cudnnBackendFinalize(g), "operation graph finalize");
  return g;
}

T4 GraphBuilder::tensor(int64_t uid, cudnnDataType_t dt, const Dims& dims, const Dims& strides, bool is_virtual,
                        bool by_value) {
  cudnnBackendDescriptor_t t = d_.make(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor descriptor");
  const int64_t alignment = 16;
  set_attr(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt, "tensor data type");
  set_attr(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data(), "tensor dims");
  set_attr(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data(), "tensor strides");
  set_attr(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor uid");
  set_attr(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "tensor alignment");
  set_attr(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, "tensor virtual flag");
  if (by_value) set_attr(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value, "tensor by-value flag");
  must(cudnnBackendFinalize(t), "tensor descriptor finalize");
  return T4{t, dims, strides};
}

// ------------------------------------------------------------ plan

cudnnBackendDescriptor_t plan_for(Descs& descs, cudnnBackendDescriptor_t graph, std::string* why) {
  constexpr int64_t kMaxConfigs = 16;  // enough to get past engines a shape rules out
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    std::string err = "no engine configuration";
    try {
      cudnnBackendDescriptor_t heur = descs.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "heuristics descriptor");
      set_desc(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph, "heuristics graph");
      set_attr(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
      must(cudnnBackendFinalize(heur), "heuristics finalize");
      // how many configurations there are, then that many (at most kMaxConfigs)
      int64_t count = 0;
      must(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                    nullptr),
           "heuristics result count");
      count = std::min(count, kMaxConfigs);
      std::vector<cudnnBackendDescriptor_t> cfgs;
      for (int64_t i = 0; i < count; ++i)
        cfgs.push_back(descs.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine configuration"));
      int64_t got = 0;
      if (count > 0)
        must(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                      &got, cfgs.data()),
             "heuristics results");
      for (int64_t i = 0; i < std::min(got, count); ++i) {
        cudnnBackendDescriptor_t plan = nullptr;
        cudnnStatus_t st = cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan);
        if (st != CUDNN_STATUS_SUCCESS) {
          err = std::string("execution plan descriptor: ") + cudnnGetErrorString(st);
          continue;
        }
        set_handle(plan, kPlanHandleAttr);
        cudnnBackendDescriptor_t cfg = cfgs[size_t(i)];
        st = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                      1, &cfg);
        if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(plan);
        if (st == CUDNN_STATUS_SUCCESS) {
          descs.adopt(plan);  // destroyed with everything it was built from
          return plan;
        }
        err = std::string("execution plan finalize: ") + cudnnGetErrorString(st);
        (void)cudnnBackendDestroyDescriptor(plan);
      }
    } catch (const BuildError& e) {
      err = e.what;
    }
    if (!why->empty()) *why += "; ";
    *why += std::string(mode == CUDNN_HEUR_MODE_A ? "heuristics A: " : "fallback heuristics: ") + err;
  }
  return nullptr;
}

int64_t workspace_size(cudnnBackendDescriptor_t plan) {
  int64_t n = 0, ws = 0;
  must(cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws),
       "plan workspace size");
  return ws;
}

// ------------------------------------------------------------ execution

void execute(const Plan& p, const std::vector<Bind>& data, Device device, const char* who) {
  std::vector<void*> ptrs;
  ptrs.reserve(p.uids.size());
  for (int64_t uid : p.uids) {
    const void* ptr = nullptr;
    for (const Bind& b : data)
      if (ptr == nullptr && b.uid == uid) ptr = b.ptr;
    STRATA_CHECK(ptr != nullptr) << who << ": no data bound for tensor " << uid << " of the plan";
    ptrs.push_back(const_cast<void*>(ptr));
  }
  Tensor workspace;
  void* ws = nullptr;
  if (p.workspace > 0) {
    workspace = Tensor::empty({(p.workspace + 7) / 8}, DType::I64, device);
    ws = workspace.raw_data();
  }
  cudnnBackendDescriptor_t pack = nullptr;
  STRATA_CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack));
  struct Release {
    cudnnBackendDescriptor_t d;
    ~Release() { (void)cudnnBackendDestroyDescriptor(d); }
  } release{pack};
  const int64_t n = int64_t(ptrs.size());
  STRATA_CUDNN_CHECK(
      cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, p.uids.data()));
  STRATA_CUDNN_CHECK(
      cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs.data()));
  STRATA_CUDNN_CHECK(cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws));
  STRATA_CUDNN_CHECK(cudnnBackendFinalize(pack));
  cudnnHandle_t handle = cudnn();
  STRATA_CUDNN_CHECK(cudnnSetStream(handle, compute_stream()));
  STRATA_CUDNN_CHECK(cudnnBackendExecute(handle, p.exec, pack));
}

}  // namespace strata::cuda::cudnn_graph
#endif  // STRATA_WITH_CUDA
