/* Chooses Quit in the desktop node's tray icon under Wine, as a person does
 * (scripts/wine-test.sh builds it with mingw; desktop-node/tests/node_process.rs,
 * windows_tray_quit_stops_the_node_under_wine, runs it): finds the tray's hidden window
 * (class AISuperApp.DesktopNode.Tray, desktop-node/src/notify/tray_windows.rs), sends it
 * the icon's right click (the callback message WM_APP+1 with WM_RBUTTONUP, what Explorer
 * sends), waits for the popup menu the node opens, then picks its last item (Quit) with
 * the keyboard (Up, Enter) inside that menu. Exit 0 once Quit was picked; 1-3 when the
 * window, the click or the menu is missing. */
#include <windows.h>
#include <stdio.h>
static HWND popup;
static BOOL CALLBACK find_menu(HWND hwnd, LPARAM pid) {
  wchar_t cls[64];
  DWORD owner = 0;
  GetWindowThreadProcessId(hwnd, &owner);
  if (owner == (DWORD)pid && IsWindowVisible(hwnd) && GetClassNameW(hwnd, cls, 64) && lstrcmpW(cls, L"#32768") == 0) {
    popup = hwnd;
    return FALSE;
  }
  return TRUE;
}
int main(void) {
  HWND tray = NULL;
  for (int i = 0; i < 300 && !tray; i++) {
    tray = FindWindowW(L"AISuperApp.DesktopNode.Tray", NULL);
    if (!tray) Sleep(100);
  }
  if (!tray) { printf("tray-quit: no tray window\n"); return 1; }
  DWORD pid = 0;
  GetWindowThreadProcessId(tray, &pid);
  if (!PostMessageW(tray, WM_APP + 1, 1, WM_RBUTTONUP)) { printf("tray-quit: cannot post the click (%lu)\n", GetLastError()); return 2; }
  for (int i = 0; i < 100 && !popup; i++) {
    EnumWindows(find_menu, (LPARAM)pid);
    if (!popup) Sleep(100);
  }
  if (!popup) { printf("tray-quit: the right click opened no menu\n"); return 3; }
  /* Wine does not hand another process the menu (MN_GETHMENU is NULL there): the node
   * logs its items. */
  HMENU menu = (HMENU)SendMessageW(popup, MN_GETHMENU, 0, 0);
  int items = menu ? GetMenuItemCount(menu) : -1;
  printf("tray-quit: the menu is open (%d items readable from here):", items < 0 ? 0 : items);
  for (int i = 0; i < items; i++) {
    wchar_t text[128] = L"";
    GetMenuStringW(menu, i, text, 128, MF_BYPOSITION);
    printf(" [%ls]", text);
  }
  printf("\n");
  fflush(stdout);
  /* The menu's own loop reads the keyboard: Up from nothing selected is the last item. */
  PostMessageW(popup, WM_KEYDOWN, VK_UP, 0);
  PostMessageW(popup, WM_KEYDOWN, VK_RETURN, 0);
  printf("tray-quit: chose the last item\n");
  return 0;
}
