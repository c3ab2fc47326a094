# The metadata the Extensions Index needs; Slicer's extension build stops without the required ones.
foreach(name EXTENSION_HOMEPAGE EXTENSION_CATEGORY EXTENSION_CONTRIBUTORS EXTENSION_DESCRIPTION
             EXTENSION_ICONURL EXTENSION_SCREENSHOTURLS EXTENSION_DEPENDS)
  if(NOT DEFINED ${name} OR "${${name}}" STREQUAL "")
    message(FATAL_ERROR "${name} is not set")
  endif()
endforeach()
file(WRITE ${CMAKE_BINARY_DIR}/extension-metadata.txt "${EXTENSION_DEPENDS}\n${EXTENSION_CATEGORY}\n")
