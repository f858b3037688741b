// The output cache of output_cache.h: a c10::Allocator whose freed blocks are kept for reuse.
#include "cpu/output_cache.h"

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdlib>
#include <map>
#include <mutex>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace flowkern::cpu {
namespace {

constexpr size_t kHuge = size_t{2} << 20;
constexpr size_t kMinCachedBytes = 4 * kHuge;

size_t cache_limit() {
  static const size_t limit = [] {
    const char* env = std::getenv("FLOWKERN_CPU_CACHE_MB");
    return static_cast<size_t>(env ? std::strtoull(env, nullptr, 10) : 1024) << 20;
  }();
  return limit;
}

struct Block {
  void* ptr;
  size_t size;
};

class OutputCache final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    if (n < kMinCachedBytes) return c10::GetDefaultCPUAllocator()->allocate(n);
    const size_t size = (n + kHuge - 1) / kHuge * kHuge;
    Block* block = take(size);
    if (!block) {
      void* p = std::aligned_alloc(kHuge, size);
      TORCH_CHECK(p != nullptr, "flowkern: out of memory allocating a ", size, "-byte CPU output");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
      (void)madvise(p, size, MADV_HUGEPAGE);  // a hint: one fault per 2 MiB on first touch
#endif
      block = new Block{p, size};
    }
    return {block->ptr, block, &OutputCache::release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  int64_t free_bytes() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(free_bytes_);
  }

  int64_t clear() {
    std::lock_guard<std::mutex> lock(mu_);
    const auto released = static_cast<int64_t>(free_bytes_);
    for (auto& [size, block] : free_) destroy(block);
    free_.clear();
    free_bytes_ = 0;
    return released;
  }

  static OutputCache& instance() {
    static OutputCache* cache = new OutputCache;  // never destroyed: tensors may outlive statics
    return *cache;
  }

 private:
  // The smallest free block of at least `size` bytes and at most 1.25x it, or nullptr.
  Block* take(size_t size) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = free_.lower_bound(size);
    if (it == free_.end() || it->first > size + size / 4) return nullptr;
    Block* block = it->second;
    free_bytes_ -= it->first;
    free_.erase(it);
    return block;
  }

  static void release(void* ctx) {
    auto* block = static_cast<Block*>(ctx);
    OutputCache& cache = instance();
    {
      std::lock_guard<std::mutex> lock(cache.mu_);
      if (cache.free_bytes_ + block->size <= cache_limit()) {
        cache.free_.emplace(block->size, block);
        cache.free_bytes_ += block->size;
        return;
      }
    }
    destroy(block);
  }

  static void destroy(Block* block) {
    std::free(block->ptr);
    delete block;
  }

  std::mutex mu_;
  std::multimap<size_t, Block*> free_;
  size_t free_bytes_ = 0;
};

}  // namespace

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& opt) {
  const auto dtype = c10::typeMetaToScalarType(opt.dtype());
  const uint64_t bytes = c10::multiply_integers(sizes) * c10::elementSize(dtype);
  if (bytes < kMinCachedBytes) return at::empty(sizes, opt);
  return at::Tensor(at::detail::empty_generic(sizes, &OutputCache::instance(),
                                              c10::DispatchKeySet(c10::DispatchKey::CPU), dtype, std::nullopt));
}

int64_t output_cache_bytes() { return OutputCache::instance().free_bytes(); }
int64_t output_cache_clear() { return OutputCache::instance().clear(); }

}  // namespace flowkern::cpu

TORCH_LIBRARY_FRAGMENT(flowkern, m) {
  m.def("cpu_output_cache_bytes() -> int", &flowkern::cpu::output_cache_bytes);
  m.def("cpu_output_cache_clear() -> int", &flowkern::cpu::output_cache_clear);
}
