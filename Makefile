# Strata build. `make` builds libstrata.a, the programs and the tests into build/.
#   CUDA=1/0   build the CUDA backend (default: 1 when nvcc is found)
#   MPI=1/0    build with MPI (default: 1 when mpicxx is found)
#   NATIVE=0   do not tune for this machine's CPU (for binaries that run elsewhere)
#   DEBUG=1    -O0 -g with sanitizers off
#   CUDA_ARCHS sm list for -gencode (default: 80 90, plus PTX for the last)
SHELL := /bin/bash
BUILD ?= build
CXX ?= g++
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA ?= $(if $(NVCC),1,0)
MPICXX ?= $(shell command -v mpicxx 2>/dev/null)
MPI ?= $(if $(MPICXX),1,0)
NATIVE ?= 1
DEBUG ?= 0
CUDA_ARCHS ?= 80 90

OPT := $(if $(filter 1,$(DEBUG)),-O0 -g,-O3 -DNDEBUG)
# GCC 12 miscompiles some AVX-512 code (a std::vector<double>{1,1,0,0} built as
# {1,1,1,1} under -mavx512f; docs/architecture.md), so native builds leave
# AVX-512 out. NATIVE=0 targets any AVX2/FMA machine (x86-64-v3).
ARCHFLAGS := $(if $(filter 1,$(NATIVE)),-march=native -mno-avx512f,-march=x86-64-v3)
CPPFLAGS := -Iinclude -isystem /usr/include/eigen3 -MMD -MP
CXXFLAGS := -std=c++17 $(OPT) $(ARCHFLAGS) -fno-math-errno -fopenmp -Wall -Wextra -Wno-unused-parameter -g1
LDLIBS := -lopenblas -lyaml-cpp -lsentencepiece -lpthread -fopenmp

ifeq ($(MPI),1)
  CPPFLAGS += -DSTRATA_WITH_MPI $(shell $(MPICXX) --showme:compile 2>/dev/null)
  LDLIBS += $(shell $(MPICXX) --showme:link 2>/dev/null)
endif

ifeq ($(CUDA),1)
  CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
  CPPFLAGS += -DSTRATA_WITH_CUDA -isystem $(CUDA_HOME)/include
  LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lcublas -lcublasLt -lcudnn -lnccl
  GENCODE := $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
             -gencode arch=compute_$(lastword $(CUDA_ARCHS)),code=compute_$(lastword $(CUDA_ARCHS))
  NVCCFLAGS := -std=c++17 $(OPT) $(GENCODE) --expt-relaxed-constexpr -Xcompiler -fopenmp,-Wall
endif

LIB_CPP := $(shell find src -name '*.cpp' -not -path 'src/apps/*' | sort)
LIB_CU := $(if $(filter 1,$(CUDA)),$(shell find src -name '*.cu' | sort))
LIB_OBJ := $(LIB_CPP:%.cpp=$(BUILD)/obj/%.o) $(LIB_CU:%.cu=$(BUILD)/obj/%.cu.o)
LIB := $(BUILD)/libstrata.a

# programs: src/apps/strata_train.cpp -> build/strata-train; data_tools/foo_bar.cpp -> build/foo-bar
APP_SRC := $(wildcard src/apps/*.cpp) $(wildcard data_tools/*.cpp)
APPS := $(foreach s,$(APP_SRC),$(BUILD)/$(subst _,-,$(basename $(notdir $(s)))))
UNIT_SRC := $(wildcard test/unit/*.cpp)
UNIT_TESTS := $(BUILD)/strata-unit-tests
# GPU tests (test/cuda/): built whenever CUDA=1, so CI compiles them; they run on a GPU machine.
CUDA_TEST_SRC := $(if $(filter 1,$(CUDA)),$(wildcard test/cuda/*.cpp))
CUDA_TESTS := $(if $(filter 1,$(CUDA)),$(BUILD)/strata-cuda-tests)
BENCH_SRC := $(wildcard test/bench/*.cpp)
BENCHES := $(foreach s,$(BENCH_SRC),$(BUILD)/bench/$(basename $(notdir $(s))))

.PHONY: all lib apps tests bench deps test demo clean
all: lib apps tests bench
lib: $(LIB)
apps: $(APPS)
tests: $(UNIT_TESTS) $(CUDA_TESTS)
bench: $(BENCHES)

deps:
	@bash third_party/install_deps.sh --test

# The README's test command: install what is missing, build, run every suite.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) all
	@bash test/run_tests.sh $(BUILD)

# The README's main-job command.
demo: deps
	@$(MAKE) --no-print-directory -j$(JOBS) all
	@bash jobs/demo.sh $(BUILD)

$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(@D)
	@echo "  CXX   $<"
	@$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

$(BUILD)/obj/%.cu.o: %.cu
	@mkdir -p $(@D)
	@echo "  NVCC  $<"
	@$(NVCC) $(filter-out -MMD -MP,$(CPPFLAGS)) $(NVCCFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(@D)
	@rm -f $@
	@echo "  AR    $@"
	@ar rcs $@ $^

define app_rule
$(BUILD)/$(subst _,-,$(basename $(notdir $(1)))): $(BUILD)/obj/$(1:.cpp=.o) $(LIB)
	@echo "  LINK  $$@"
	@$$(CXX) $$(CXXFLAGS) $$^ -o $$@ $$(LDLIBS)
endef
$(foreach s,$(APP_SRC),$(eval $(call app_rule,$(s))))

$(UNIT_TESTS): $(UNIT_SRC:%.cpp=$(BUILD)/obj/%.o) $(LIB)
	@echo "  LINK  $@"
	@$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/strata-cuda-tests: $(CUDA_TEST_SRC:%.cpp=$(BUILD)/obj/%.o) $(LIB)
	@echo "  LINK  $@"
	@$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/test/bench/%.o $(LIB)
	@mkdir -p $(@D)
	@echo "  LINK  $@"
	@$(CXX) $(CXXFLAGS) $^ -o $@ $(LDLIBS)

clean:
	rm -rf $(BUILD)

# Objects depend on the flags they were built with: changing CUDA=, MPI=,
# NATIVE= or DEBUG= rebuilds everything instead of mixing objects.
FLAGS_STAMP := $(BUILD)/.flags
FLAGS_NOW := $(CXX) $(CPPFLAGS) $(CXXFLAGS) $(NVCCFLAGS) $(LDLIBS)
$(shell mkdir -p $(BUILD) && (echo '$(FLAGS_NOW)' | cmp -s - $(FLAGS_STAMP) || echo '$(FLAGS_NOW)' > $(FLAGS_STAMP)))
$(LIB_OBJ) $(UNIT_SRC:%.cpp=$(BUILD)/obj/%.o) $(CUDA_TEST_SRC:%.cpp=$(BUILD)/obj/%.o) $(APP_SRC:%.cpp=$(BUILD)/obj/%.o) $(BENCH_SRC:%.cpp=$(BUILD)/obj/%.o): $(FLAGS_STAMP)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
