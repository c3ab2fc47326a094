set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})

# CTK's ctkMacroCompilePythonScript: mandatory arguments, sources relative to SOURCE_DIR, copied to
# DESTINATION_DIR keeping their relative paths (done here at configure time instead of build time).
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET"
    "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
  foreach(name TARGET_NAME SCRIPTS DESTINATION_DIR INSTALL_DIR)
    if(NOT DEFINED MY_${name})
      message(FATAL_ERROR "ctkMacroCompilePythonScript: ${name} is mandatory")
    endif()
  endforeach()
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "ctkMacroCompilePythonScript: unknown arguments ${MY_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT DEFINED MY_SOURCE_DIR)
    set(MY_SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  foreach(file IN LISTS MY_SCRIPTS MY_RESOURCES)
    if(NOT EXISTS ${MY_SOURCE_DIR}/${file})
      message(FATAL_ERROR "ctkMacroCompilePythonScript(${MY_TARGET_NAME}): no file ${MY_SOURCE_DIR}/${file}")
    endif()
    configure_file(${MY_SOURCE_DIR}/${file} ${MY_DESTINATION_DIR}/${file} COPYONLY)
  endforeach()
  set_property(GLOBAL APPEND PROPERTY STANDIN_PYTHON_TARGETS ${MY_TARGET_NAME})
endmacro()

# Slicer's slicerMacroBuildScriptedModule: NAME and SCRIPTS required, every listed file must exist.
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(NOT MY_SLICER_NAME OR NOT MY_SLICER_SCRIPTS)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule: NAME and SCRIPTS are mandatory")
  endif()
  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule: unknown arguments ${MY_SLICER_UNPARSED_ARGUMENTS}")
  endif()
  ctkMacroCompilePythonScript(
    TARGET_NAME ${MY_SLICER_NAME}
    SCRIPTS ${MY_SLICER_SCRIPTS}
    RESOURCES ${MY_SLICER_RESOURCES}
    DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}
    INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}
    NO_INSTALL_SUBDIR)
endmacro()

macro(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT" "" ${ARGN})
  if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT})
    message(FATAL_ERROR "slicer_add_python_unittest: no file ${MY_SCRIPT}")
  endif()
endmacro()
