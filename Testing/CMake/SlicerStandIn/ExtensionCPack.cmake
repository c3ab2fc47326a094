get_property(targets GLOBAL PROPERTY STANDIN_PYTHON_TARGETS)
file(WRITE ${CMAKE_BINARY_DIR}/python-targets.txt "${targets}\n")
