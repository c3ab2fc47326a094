# A stand-in for Slicer's CMake package, for configuring this extension where no Slicer build exists
# (Testing/Python/test_cmake.py). It is not Slicer: its macros take the arguments of Slicer's and CTK's
# macros of the same names, fail where those fail at configure or build time (missing mandatory
# arguments, listed files that do not exist, missing extension metadata), and copy the files those
# macros would copy into the build tree, so the test can check what an installed extension would hold.
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/ExtensionGenerateConfig.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/ExtensionCPack.cmake)
set(Slicer_FOUND TRUE)
