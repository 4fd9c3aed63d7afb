; The AI SuperApp desktop node for Windows: a per-user installer (no administrator
; rights, nothing outside the user's profile), built on Linux with Debian's NSIS 3.08 by
; scripts/package-windows.sh:
;
;   makensis -WX -DVERSION=0.1.0 -DEXE=desktop-node.exe -DREADME=README.txt \
;     -DOUTFILE=aisa-node-0.1.0-x86_64-windows-setup.exe packaging/windows/desktop-node.nsi
;
; Installs desktop-node.exe (the JavaScript runtime is built into it) and README.txt in
; %LOCALAPPDATA%\Programs\AI SuperApp, a Start-menu folder "AI SuperApp" (the node, its
; README, the uninstaller; the node's shortcut carries the AppUserModelID
; AISuperApp.DesktopNode, registered with the display name "AI SuperApp" under
; HKCU\Software\Classes\AppUserModelId, so the node's toasts show as AI SuperApp), the
; Apps & features entry (HKCU) and, unless unticked (or
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
; The node's AppUserModelID (desktop-node/src/notify/windows.rs, APP_ID) and where its
; display name is registered.
!define APPID "AISuperApp.DesktopNode"
!define APPIDKEY "Software\Classes\AppUserModelId\${APPID}"

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
  ; `run --face`: the tray icon's Open and a click on a notification lead to the desktop
  ; face, the page where a person approves installs without a terminal.
  CreateShortcut "$SMPROGRAMS\${FOLDER}\${APPNAME}.lnk" "$INSTDIR\desktop-node.exe" "run --face" \
    "$INSTDIR\desktop-node.exe" 0 SW_SHOWMINIMIZED "" "Connect to the relay and run mini-apps"
  ; The shortcut carries the node's AppUserModelID: an unpackaged program's toasts show
  ; under an id a Start-menu shortcut carries (else the node falls back to Windows
  ; PowerShell's id). Its display name is registered only when the shortcut took it,
  ; so the node (which looks for both) never picks an id no shortcut carries.
  StrCpy $R0 "$SMPROGRAMS\${FOLDER}\${APPNAME}.lnk"
  StrCpy $R1 "${APPID}"
  Call SetShortcutAppId
  ${If} $R9 == "ok"
    WriteRegStr HKCU "${APPIDKEY}" "DisplayName" "AI SuperApp"
  ${Else}
    DetailPrint "The shortcut did not take its AppUserModelID ($R9): notifications will show as Windows PowerShell."
    DeleteRegKey HKCU "${APPIDKEY}"
  ${EndIf}
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
  WriteRegStr HKCU "${RUNKEY}" "${RUNVALUE}" '"$INSTDIR\desktop-node.exe" run --face'
SectionEnd

;; Sets System.AppUserModel.ID on an existing shortcut: $R0 = the .lnk, $R1 = the id;
;; $R9 = "ok", or the step that failed and its HRESULT. Debian's NSIS has no WinShell or
;; ApplicationID plug-in, so this goes through the System plug-in to the shell's own
;; COM objects, as those plug-ins do: CoCreateInstance(CLSID_ShellLink) as IShellLinkW,
;; IPersistFile::Load(the .lnk, STGM_READWRITE), IPropertyStore::SetValue(
;; PKEY_AppUserModel_ID {9F4C2855-9F79-4B39-A8D0-E1D42DE1D5F3},5, a VT_LPWSTR
;; PROPVARIANT), IPropertyStore::Commit, IPersistFile::Save. Vtable slots: IUnknown 0-2;
;; IPersistFile Load 5, Save 6; IPropertyStore SetValue 6, Commit 7.
Function SetShortcutAppId
  Push $0
  Push $1
  Push $2
  Push $3
  Push $4
  Push $5
  Push $6
  StrCpy $R9 "CoCreateInstance(ShellLink)"
  System::Call 'ole32::CoCreateInstance(g "{00021401-0000-0000-C000-000000000046}", p 0, i 1, g "{000214F9-0000-0000-C000-000000000046}", *p .r1) i .r0'
  ${If} $0 = 0
    StrCpy $R9 "QueryInterface(IPersistFile)"
    System::Call '$1->0(g "{0000010b-0000-0000-C000-000000000046}", *p .r2) i .r0'
    ${If} $0 = 0
      StrCpy $R9 "IPersistFile::Load"
      System::Call '$2->5(w R0, i 2) i .r0'
      ${If} $0 = 0
        StrCpy $R9 "QueryInterface(IPropertyStore)"
        System::Call '$1->0(g "{886D8EEB-8CF2-4446-8D02-CDBA1DBDCF99}", *p .r3) i .r0'
        ${If} $0 = 0
          ; PROPERTYKEY {fmtid, pid}; the id's text; PROPVARIANT {vt = VT_LPWSTR (31),
          ; three reserved words, the text's address, padding} (24 bytes on x64).
          System::Call '*(&g16 "{9F4C2855-9F79-4B39-A8D0-E1D42DE1D5F3}", &i4 5) p .r4'
          System::Call '*(&w128 R1) p .r5'
          System::Call '*(&i2 31, &i2 0, &i2 0, &i2 0, p r5, p 0) p .r6'
          StrCpy $R9 "IPropertyStore::SetValue"
          System::Call '$3->6(p r4, p r6) i .r0'
          ${If} $0 = 0
            StrCpy $R9 "IPropertyStore::Commit"
            System::Call '$3->7() i .r0'
          ${EndIf}
          System::Free $6
          System::Free $5
          System::Free $4
          System::Call '$3->2()'
          ${If} $0 = 0
            StrCpy $R9 "IPersistFile::Save"
            System::Call '$2->6(w R0, i 1) i .r0'
          ${EndIf}
        ${EndIf}
      ${EndIf}
      System::Call '$2->2()'
    ${EndIf}
    System::Call '$1->2()'
  ${EndIf}
  ${If} $0 = 0
    StrCpy $R9 "ok"
  ${Else}
    StrCpy $R9 "$R9: HRESULT $0"
  ${EndIf}
  Pop $6
  Pop $5
  Pop $4
  Pop $3
  Pop $2
  Pop $1
  Pop $0
FunctionEnd

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
  DeleteRegKey HKCU "${APPIDKEY}"
  DeleteRegKey HKCU "${UNINSTKEY}"
SectionEnd
