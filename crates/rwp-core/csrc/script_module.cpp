// The few TorchScript module operations tch does not expose (buffers above
// all), as a C API over torch::jit::Module. Every function catches C++
// exceptions and reports them through `error` (a malloc'ed string the caller
// frees with rwp_free_string); tensors cross as `torch::Tensor*`, the same
// handles tch uses, owned by the caller.
#include <torch/script.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace {

char* copy_string(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

template <typename F>
bool guarded(char** error, F f) {
  try {
    f();
    return true;
  } catch (const c10::Error& e) {
    *error = copy_string(e.what_without_backtrace());
  } catch (const std::exception& e) {
    *error = copy_string(e.what());
  } catch (...) {
    *error = copy_string("unknown C++ exception");
  }
  return false;
}

using NamedTensorCallback = void (*)(void* data, const char* name, torch::Tensor* tensor);

}  // namespace

extern "C" {

void rwp_free_string(char* s) { std::free(s); }

// `device` < 0 is the CPU, otherwise the CUDA device of that index.
void* rwp_script_load(const char* path, int device, char** error) {
  torch::jit::Module* module = nullptr;
  guarded(error, [&] {
    c10::Device target = device < 0 ? c10::Device(c10::kCPU) : c10::Device(c10::kCUDA, device);
    module = new torch::jit::Module(torch::jit::load(std::string(path), target));
  });
  return module;
}

void rwp_script_free(void* module) { delete static_cast<torch::jit::Module*>(module); }

bool rwp_script_named_parameters(void* module, void* data, NamedTensorCallback f, char** error) {
  return guarded(error, [&] {
    for (const auto& p : static_cast<torch::jit::Module*>(module)->named_parameters(/*recurse=*/true)) {
      f(data, p.name.c_str(), new torch::Tensor(p.value));
    }
  });
}

bool rwp_script_named_buffers(void* module, void* data, NamedTensorCallback f, char** error) {
  return guarded(error, [&] {
    for (const auto& b : static_cast<torch::jit::Module*>(module)->named_buffers(/*recurse=*/true)) {
      f(data, b.name.c_str(), new torch::Tensor(b.value));
    }
  });
}

bool rwp_script_set_training(void* module, bool training, char** error) {
  return guarded(error, [&] { static_cast<torch::jit::Module*>(module)->train(training); });
}

torch::Tensor* rwp_script_forward(void* module, torch::Tensor* input, char** error) {
  torch::Tensor* out = nullptr;
  guarded(error, [&] {
    c10::IValue result = static_cast<torch::jit::Module*>(module)->forward({*input});
    if (!result.isTensor()) {
      throw std::runtime_error("forward returned " + result.tagKind() + ", not a tensor of logits");
    }
    out = new torch::Tensor(result.toTensor());
  });
  return out;
}

}  // extern "C"
