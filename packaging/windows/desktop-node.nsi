; The AI SuperApp desktop node for Windows: a per-user installer (no administrator
; rights, nothing outside the user's profile), built on Linux with Debian's NSIS 3.08 by
; scripts/package-windows.sh:
;
;   makensis -WX -DVERSION=0.1.0 -DEXE=desktop-node.exe -DREADME=README.txt \
;     -DOUTFILE=aisa-node-0.1.0-x86_64-windows-setup.exe packaging/windows/desktop-node.nsi
;
; Installs desktop-node.exe (the JavaScript runtime is built into it) and README.txt in
; %LOCALAPPDATA%\Programs\AI SuperApp, a Start-menu folder "AI SuperApp" (the node, its
; README, the uninstaller), the Apps & features entry (HKCU) and, unless unticked (or
; /NOAUTOSTART on the command line), a Run value in HKCU so the node starts when the
; user signs in. /S installs silently. The uninstaller removes all of that, and the
; binaries `desktop-node update` leaves beside the exe; it keeps the node's own folders
; (%APPDATA%\aisuperapp, %LOCALAPPDATA%\aisuperapp: the device's keys and installed
; mini-apps; the secrets themselves are in the Credential Manager). docs/desktop.md,
; "Windows".

; The node is x86_64 only: so is its installer (Wine here runs no 32-bit code either).
Target amd64-unicode
!include "MUI2.nsh"
!include "FileFunc.nsh"
!include "LogicLib.nsh"
!include "Sections.nsh"

!ifndef VERSION
  !error "pass -DVERSION=x.y.z (the node's version)"
!endif
!ifndef EXE
  !error "pass -DEXE=path/to/desktop-node.exe"
!endif
!ifndef README
  !error "pass -DREADME=path/to/README.txt"
!endif
!ifndef OUTFILE
  !define OUTFILE "aisa-node-${VERSION}-x86_64-windows-setup.exe"
!endif

!define APPNAME "AI SuperApp desktop node"
!define FOLDER "AI SuperApp"
!define UNINSTKEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\AISuperAppDesktopNode"
!define RUNKEY "Software\Microsoft\Windows\CurrentVersion\Run"
!define RUNVALUE "AISuperAppDesktopNode"

Name "${APPNAME}"
OutFile "${OUTFILE}"
RequestExecutionLevel user
InstallDir "$LOCALAPPDATA\Programs\${FOLDER}"
InstallDirRegKey HKCU "${UNINSTKEY}" "InstallLocation"
; LZMA for releases; scripts/package-windows.sh --fast passes zlib (a test of a debug exe).
!ifndef COMPRESSOR
  !define COMPRESSOR "/SOLID lzma"
!endif
SetCompressor ${COMPRESSOR}
ShowInstDetails show
ShowUninstDetails show

!define MUI_ABORTWARNING
!define MUI_COMPONENTSPAGE_NODESC
!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_COMPONENTS
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!define MUI_FINISHPAGE_SHOWREADME "$INSTDIR\README.txt"
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Section "Desktop node (required)" SecNode
  SectionIn RO
  SetShellVarContext current
  SetOutPath "$INSTDIR"
  File "/oname=desktop-node.exe" "${EXE}"
  File "/oname=README.txt" "${README}"
  WriteUninstaller "$INSTDIR\uninstall.exe"

  CreateDirectory "$SMPROGRAMS\${FOLDER}"
  CreateShortcut "$SMPROGRAMS\${FOLDER}\${APPNAME}.lnk" "$INSTDIR\desktop-node.exe" "run" \
    "$INSTDIR\desktop-node.exe" 0 SW_SHOWMINIMIZED "" "Connect to the relay and run mini-apps"
  CreateShortcut "$SMPROGRAMS\${FOLDER}\README.lnk" "$INSTDIR\README.txt"
  CreateShortcut "$SMPROGRAMS\${FOLDER}\Uninstall ${APPNAME}.lnk" "$INSTDIR\uninstall.exe"

  ; Apps & features (per user).
  WriteRegStr HKCU "${UNINSTKEY}" "DisplayName" "${APPNAME}"
  WriteRegStr HKCU "${UNINSTKEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINSTKEY}" "Publisher" "AI SuperApp"
  WriteRegStr HKCU "${UNINSTKEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINSTKEY}" "DisplayIcon" "$INSTDIR\desktop-node.exe"
  WriteRegStr HKCU "${UNINSTKEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKCU "${UNINSTKEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKCU "${UNINSTKEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINSTKEY}" "NoRepair" 1
  ${GetSize} "$INSTDIR" "/S=0K" $0 $1 $2
  WriteRegDWORD HKCU "${UNINSTKEY}" "EstimatedSize" $0

  ; Installing again without the autostart option removes an older one's Run value.
  DeleteRegValue HKCU "${RUNKEY}" "${RUNVALUE}"
SectionEnd

Section "Start the node when I sign in" SecAutostart
  WriteRegStr HKCU "${RUNKEY}" "${RUNVALUE}" '"$INSTDIR\desktop-node.exe" run'
SectionEnd

Function .onInit
  ${GetParameters} $R0
  ClearErrors
  ${GetOptions} $R0 "/NOAUTOSTART" $R1
  ${IfNot} ${Errors}
    !insertmacro UnselectSection ${SecAutostart}
  ${EndIf}
FunctionEnd

Section "Uninstall"
  SetShellVarContext current
  ; A running node holds its exe open: ask to stop it (a silent uninstall gives up).
  retry:
  ClearErrors
  Delete "$INSTDIR\desktop-node.exe"
  ${If} ${Errors}
    MessageBox MB_RETRYCANCEL|MB_ICONEXCLAMATION \
      "desktop-node.exe is running. Stop it (Ctrl-C in its window), then choose Retry." \
      /SD IDCANCEL IDRETRY retry
    Abort "desktop-node.exe is running"
  ${EndIf}
  ; What `desktop-node update` leaves beside the exe (docs/desktop.md, "Updates").
  Delete "$INSTDIR\desktop-node.exe.old"
  Delete "$INSTDIR\desktop-node.exe.failed"
  Delete "$INSTDIR\desktop-node.exe.download-*"
  Delete "$INSTDIR\README.txt"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"

  Delete "$SMPROGRAMS\${FOLDER}\${APPNAME}.lnk"
  Delete "$SMPROGRAMS\${FOLDER}\README.lnk"
  Delete "$SMPROGRAMS\${FOLDER}\Uninstall ${APPNAME}.lnk"
  RMDir "$SMPROGRAMS\${FOLDER}"

  DeleteRegValue HKCU "${RUNKEY}" "${RUNVALUE}"
  DeleteRegKey HKCU "${UNINSTKEY}"
SectionEnd
