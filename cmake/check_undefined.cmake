# Fails the build when the op library leaves one of our own symbols undefined.
# A TensorFlow op library must link with undefined symbols allowed (TensorFlow resolves them when it
# loads the library), so the linker cannot catch a fusedbnn function that was declared, called and
# never compiled: it would show only as an ImportError at the first `import fusedbnn`.
# Usage: cmake -DNM=<nm> -DLIBRARY=<path> -P check_undefined.cmake
execute_process(COMMAND "${NM}" --undefined-only --demangle "${LIBRARY}"
                OUTPUT_VARIABLE undefined RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${NM} could not read ${LIBRARY}")
endif()
string(REGEX MATCHALL "[^\n]*fusedbnn::[^\n]*" ours "${undefined}")
if(ours)
  list(JOIN ours "\n" ours)
  message(FATAL_ERROR "${LIBRARY} calls fusedbnn functions that no source defines:\n${ours}")
endif()
