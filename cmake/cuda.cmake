# The CUDA build (-DFUSEDBNN_CUDA=ON), included by CMakeLists.txt after the CPU targets:
# - fusedbnn_core_cuda: the kernels in csrc/core/*.cu (framework-free, no Python, no TensorFlow);
# - _core gains the submodule fusedbnn._core.cuda (csrc/pybind/cuda/*.cc, device pointers);
# - with FUSEDBNN_TF, the op library gains its GPU kernel registrations (csrc/tf/gpu/*.cc).
#
# The CUDA runtime is linked statically, so the libraries need no libcudart at run time, only a
# driver that runs this toolkit's code: CUDA 13 needs driver r580 or newer. TensorFlow's own CUDA 12
# runtime and ours share the device's primary context; our kernels go on TensorFlow's streams. With
# an older driver the GPU kernels raise an error that names the driver required (cuda_driver.h).
# Targets, unless CMAKE_CUDA_ARCHITECTURES says otherwise: the cards people have, as machine code
# (T4, A100, A10 / RTX 30, L4 / RTX 40, H100 / H200), and PTX for newer ones (compiled by the driver
# at first use). Each architecture costs its own compile of every kernel (benchmarks/NOTES.md).
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "75-real;80-real;86-real;89-real;90-real;90-virtual")
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
message(STATUS "CUDA ${CUDAToolkit_VERSION} for architectures ${CMAKE_CUDA_ARCHITECTURES}")

file(GLOB CORE_CUDA CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/csrc/core/*.cu")
add_library(fusedbnn_core_cuda STATIC ${CORE_CUDA})
target_include_directories(fusedbnn_core_cuda PUBLIC "${CMAKE_SOURCE_DIR}/csrc")
set_target_properties(fusedbnn_core_cuda PROPERTIES CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON
                                                    POSITION_INDEPENDENT_CODE ON)
# No contraction into FMAs except where the kernels write fmaf (the noise contract); never
# --use_fast_math.
target_compile_options(fusedbnn_core_cuda PRIVATE --fmad=false -O3 -Xcompiler=-Wall,-Wextra,-Wno-unknown-pragmas)
# CI turns warnings into errors; elsewhere another host compiler's new warning must not stop a build.
option(FUSEDBNN_CUDA_WERROR "Treat warnings in the CUDA sources as errors" OFF)
if(FUSEDBNN_CUDA_WERROR)
  target_compile_options(fusedbnn_core_cuda PRIVATE --Werror=all-warnings)
endif()
target_link_libraries(fusedbnn_core_cuda PUBLIC CUDA::cudart_static)

file(GLOB PYBIND_CUDA_SOURCES CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/csrc/pybind/cuda/*.cc")
target_sources(_core PRIVATE ${PYBIND_CUDA_SOURCES})
target_compile_definitions(_core PRIVATE FUSEDBNN_WITH_CUDA)
target_link_libraries(_core PRIVATE fusedbnn_core_cuda)

if(TARGET _fusedbnn_ops)
  # These sources include TensorFlow's headers with GOOGLE_CUDA set and its bundled CUDA 12 headers
  # first; they only name cudaStream_t / cudaError_t from them, whose ABI is the same in CUDA 13.
  file(GLOB TF_GPU_SOURCES CONFIGURE_DEPENDS "${CMAKE_SOURCE_DIR}/csrc/tf/gpu/*.cc")
  target_sources(_fusedbnn_ops PRIVATE ${TF_GPU_SOURCES})
  set_source_files_properties(${TF_GPU_SOURCES} TARGET_DIRECTORY _fusedbnn_ops PROPERTIES
    COMPILE_DEFINITIONS "GOOGLE_CUDA=1"
    INCLUDE_DIRECTORIES "${TF_INCLUDE}/third_party/gpus/cuda/include")
  target_link_libraries(_fusedbnn_ops PRIVATE fusedbnn_core_cuda)
endif()
