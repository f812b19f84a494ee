// The few TorchScript module operations tch does not expose (buffers above
// all), as a C API over torch::jit::Module. Every function catches C++
// exceptions and reports them through `error` (a malloc'ed string the caller
// frees with rwp_free_string); tensors cross as `torch::Tensor*`, the same
// handles tch uses, owned by the caller.
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/script.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <unordered_set>

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
using OperationCallback = void (*)(void* data, const char* function, const char* op);

void walk_function(torch::jit::Function& function, void* data, OperationCallback f,
                   std::unordered_set<std::string>& seen);

// The function a call node calls, when it is TorchScript code the walk can
// follow (not a custom C++ class's method, an interface or a builtin).
torch::jit::Function* callee(torch::jit::Node* node) {
  if (node->kind() == c10::prim::CallMethod) {
    if (auto cls = node->inputs().at(0)->type()->cast<c10::ClassType>()) {
      torch::jit::Function* method = cls->findMethod(node->s(c10::attr::name));
      if (method != nullptr && torch::jit::tryToGraphFunction(*method) != nullptr) {
        return method;
      }
    }
  } else if (node->kind() == c10::prim::CallFunction) {
    if (auto fn = node->inputs().at(0)->type()->cast<c10::FunctionType>()) {
      if (torch::jit::tryToGraphFunction(*fn->function()) != nullptr) {
        return fn->function();
      }
    }
  }
  return nullptr;
}

// Every node of `block` and of the blocks nested in it (if, loop bodies);
// calls are followed into the functions they call.
void walk_block(torch::jit::Block* block, const std::string& function, void* data, OperationCallback f,
                std::unordered_set<std::string>& seen) {
  for (torch::jit::Node* node : block->nodes()) {
    if (torch::jit::Function* target = callee(node)) {
      walk_function(*target, data, f, seen);
    } else {
      std::string op = node->kind().toQualString();
      // A call the walk cannot follow: name its target.
      if (node->kind() == c10::prim::CallMethod) {
        op += "(" + node->inputs().at(0)->type()->str() + "." + node->s(c10::attr::name) + ")";
      } else if (node->kind() == c10::prim::CallFunction) {
        op += "(" + node->inputs().at(0)->type()->str() + ")";
      }
      f(data, function.c_str(), op.c_str());
    }
    for (torch::jit::Block* nested : node->blocks()) {
      walk_block(nested, function, data, f, seen);
    }
  }
}

// Reports the operations of one function (once) and of what it calls.
void walk_function(torch::jit::Function& function, void* data, OperationCallback f,
                   std::unordered_set<std::string>& seen) {
  std::string name = function.qualname().qualifiedName();
  if (!seen.insert(name).second) {
    return;
  }
  torch::jit::GraphFunction* graph_function = torch::jit::tryToGraphFunction(function);
  if (graph_function == nullptr) {
    f(data, name.c_str(), "<native function>");
    return;
  }
  walk_block(graph_function->graph()->block(), name, data, f, seen);
}

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

// The same, from a module file's bytes in memory.
void* rwp_script_load_bytes(const char* data, size_t len, int device, char** error) {
  torch::jit::Module* module = nullptr;
  guarded(error, [&] {
    c10::Device target = device < 0 ? c10::Device(c10::kCPU) : c10::Device(c10::kCUDA, device);
    std::istringstream in(std::string(data, len));
    module = new torch::jit::Module(torch::jit::load(in, target));
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

// Calls `f(data, function, op)` for every operation of every function the
// module's archive defines: each submodule's methods, `__setstate__`
// included, and the free functions and classes they call. (The walk
// follows calls itself: torch's Inline pass does nothing while the graph
// executor's optimisations are off, as they are here.)
bool rwp_script_operations(void* module, void* data, OperationCallback f, char** error) {
  return guarded(error, [&] {
    auto* m = static_cast<torch::jit::Module*>(module);
    std::unordered_set<std::string> seen;
    for (const torch::jit::Module& sub : m->modules()) {
      for (torch::jit::Function* method : sub.type()->methods()) {
        walk_function(*method, data, f, seen);
      }
    }
    for (torch::jit::Function* function : m->_ivalue()->compilation_unit()->get_functions()) {
      walk_function(*function, data, f, seen);
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
