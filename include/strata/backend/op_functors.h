// The functor of each element-wise op enum (backend/functors.h), shared by the
// CPU loops and the CUDA kernels so both run the same STRATA_HD math.
#pragma once
#include "strata/backend/elementwise.h"
#include "strata/backend/functors.h"
#include "strata/core/error.h"

namespace strata::backend {

// Calls fn(functor) with the functor object for `op`.
template <class Fn>
inline decltype(auto) with_unary(UnaryOp op, Fn&& fn) {
  namespace F = functors;
  switch (op) {
    case UnaryOp::Neg: return fn(F::Neg{});
    case UnaryOp::Exp: return fn(F::Exp{});
    case UnaryOp::Log: return fn(F::Log{});
    case UnaryOp::Tanh: return fn(F::Tanh{});
    case UnaryOp::Sigmoid: return fn(F::Sigmoid{});
    case UnaryOp::Relu: return fn(F::Relu{});
    case UnaryOp::Gelu: return fn(F::Gelu{});
    case UnaryOp::Sqrt: return fn(F::Sqrt{});
    case UnaryOp::Rsqrt: return fn(F::Rsqrt{});
    case UnaryOp::Abs: return fn(F::Abs{});
    case UnaryOp::Square: return fn(F::Square{});
    case UnaryOp::Reciprocal: return fn(F::Reciprocal{});
  }
  STRATA_FAIL() << "unary: unknown op " << int(op);
  return fn(F::Neg{});
}

template <class Fn>
inline decltype(auto) with_unary_grad(UnaryOp op, Fn&& fn) {
  namespace F = functors;
  switch (op) {
    case UnaryOp::Neg: return fn(F::NegGrad{});
    case UnaryOp::Exp: return fn(F::ExpGrad{});
    case UnaryOp::Log: return fn(F::LogGrad{});
    case UnaryOp::Tanh: return fn(F::TanhGrad{});
    case UnaryOp::Sigmoid: return fn(F::SigmoidGrad{});
    case UnaryOp::Relu: return fn(F::ReluGrad{});
    case UnaryOp::Gelu: return fn(F::GeluGrad{});
    case UnaryOp::Sqrt: return fn(F::SqrtGrad{});
    case UnaryOp::Rsqrt: return fn(F::RsqrtGrad{});
    case UnaryOp::Abs: return fn(F::AbsGrad{});
    case UnaryOp::Square: return fn(F::SquareGrad{});
    case UnaryOp::Reciprocal: return fn(F::ReciprocalGrad{});
  }
  STRATA_FAIL() << "unary_backward: unknown op " << int(op);
  return fn(F::NegGrad{});
}

template <class Fn>
inline decltype(auto) with_binary(BinaryOp op, Fn&& fn) {
  namespace F = functors;
  switch (op) {
    case BinaryOp::Add: return fn(F::Add{});
    case BinaryOp::Sub: return fn(F::Sub{});
    case BinaryOp::Mul: return fn(F::Mul{});
    case BinaryOp::Div: return fn(F::Div{});
    case BinaryOp::Maximum: return fn(F::Maximum{});
    case BinaryOp::Minimum: return fn(F::Minimum{});
    case BinaryOp::Pow: return fn(F::Pow{});
  }
  STRATA_FAIL() << "binary: unknown op " << int(op);
  return fn(F::Add{});
}

template <class Fn>
inline decltype(auto) with_compare(CompareOp op, Fn&& fn) {
  namespace F = functors;
  switch (op) {
    case CompareOp::Eq: return fn(F::Eq{});
    case CompareOp::Ne: return fn(F::Ne{});
    case CompareOp::Lt: return fn(F::Lt{});
    case CompareOp::Le: return fn(F::Le{});
    case CompareOp::Gt: return fn(F::Gt{});
    case CompareOp::Ge: return fn(F::Ge{});
  }
  STRATA_FAIL() << "compare: unknown op " << int(op);
  return fn(F::Eq{});
}

inline const char* compare_name(CompareOp op) {
  switch (op) {
    case CompareOp::Eq: return "eq";
    case CompareOp::Ne: return "ne";
    case CompareOp::Lt: return "lt";
    case CompareOp::Le: return "le";
    case CompareOp::Gt: return "gt";
    case CompareOp::Ge: return "ge";
  }
  return "compare";
}

}  // namespace strata::backend
