/* Clicks the desktop node's tray icon under Wine, as a person does (scripts/wine-test.sh
 * builds it with mingw; desktop-node/tests/node_process.rs,
 * windows_tray_opens_the_face_and_quit_stops_the_node_under_wine, runs it). It finds the
 * tray's hidden window (class AISuperApp.DesktopNode.Tray,
 * desktop-node/src/notify/tray_windows.rs) and sends it what Explorer sends when the icon
 * is clicked (the callback message WM_APP+1 with the mouse message):
 *
 *   tray-click.exe open   a left click (WM_LBUTTONUP): the node opens its face;
 *   tray-click.exe quit   a right click (WM_RBUTTONUP): waits for the popup menu the node
 *                         opens, then picks its last item (Quit) with the keyboard (Up,
 *                         Enter) inside that menu.
 *
 * Exit 0 once done; 1-3 when the window, the click or the menu is missing.
 *
 * Started with one http:// argument instead, it is the node's face opener
 * (AISA_NODE_OPENER): it writes that URL to the file %AISA_TRAY_OPENED% names. */
#include <windows.h>
#include <stdio.h>
#include <string.h>
static HWND popup;
static BOOL CALLBACK find_menu(HWND hwnd, LPARAM pid) {
  wchar_t cls[64];
  DWORD owner = 0;
  GetWindowThreadProcessId(hwnd, &owner);
  if (owner == (DWORD)pid && IsWindowVisible(hwnd) && GetClassNameW(hwnd, cls, 64) &&
      lstrcmpW(cls, L"#32768") == 0) {
    popup = hwnd;
    return FALSE;
  }
  return TRUE;
}
static int record(const char *url) {
  const char *path = getenv("AISA_TRAY_OPENED");
  FILE *out = path ? fopen(path, "w") : NULL;
  if (!out) return 4;
  fprintf(out, "%s\n", url);
  return fclose(out) == 0 ? 0 : 4;
}
int main(int argc, char **argv) {
  if (argc == 2 && strncmp(argv[1], "http://", 7) == 0) return record(argv[1]);
  int quit = argc < 2 || strcmp(argv[1], "open") != 0;
  HWND tray = NULL;
  for (int i = 0; i < 300 && !tray; i++) {
    tray = FindWindowW(L"AISuperApp.DesktopNode.Tray", NULL);
    if (!tray) Sleep(100);
  }
  if (!tray) { printf("tray-click: no tray window\n"); return 1; }
  if (!quit) {
    if (!PostMessageW(tray, WM_APP + 1, 1, WM_LBUTTONUP)) {
      printf("tray-click: cannot post the click (%lu)\n", GetLastError());
      return 2;
    }
    printf("tray-click: clicked the icon\n");
    return 0;
  }
  DWORD pid = 0;
  GetWindowThreadProcessId(tray, &pid);
  if (!PostMessageW(tray, WM_APP + 1, 1, WM_RBUTTONUP)) {
    printf("tray-click: cannot post the click (%lu)\n", GetLastError());
    return 2;
  }
  for (int i = 0; i < 100 && !popup; i++) {
    EnumWindows(find_menu, (LPARAM)pid);
    if (!popup) Sleep(100);
  }
  if (!popup) { printf("tray-click: the right click opened no menu\n"); return 3; }
  /* Wine does not hand another process the menu's items (MN_GETHMENU is NULL there):
   * the node logs them. The menu's own loop reads the keyboard: Up from nothing selected
   * is the last item. */
  printf("tray-click: the menu is open\n");
  PostMessageW(popup, WM_KEYDOWN, VK_UP, 0);
  PostMessageW(popup, WM_KEYDOWN, VK_RETURN, 0);
  printf("tray-click: chose the last item\n");
  return 0;
}
