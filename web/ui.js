// The page's elements, looked up once, and the notice line (`announce`).



export const $ = (id) => document.getElementById(id);
export const ui = {
  conn: $("conn"),
  connText: $("conn-text"),
  retry: $("retry-now"),
  nameForm: $("name-form"),
  name: $("name"),
  nameHint: $("name-hint"),
  drawerToggle: $("drawer-toggle"),
  sidebar: $("sidebar"),
  roomList: $("room-list"),
  otherRooms: $("other-rooms"),
  otherRoomsHeading: $("other-rooms-h"),
  joinForm: $("join-form"),
  joinRoom: $("join-room"),
  memberList: $("member-list"),
  memberCount: $("member-count"),
  roomTitle: $("room-title"),
  leave: $("leave-room"),
  log: $("log"),
  jump: $("jump"),
  typing: $("typing"),
  composer: $("composer"),
  message: $("message"),
  alert: $("alert"),
  accountName: $("account-name"),
  signIn: $("sign-in"),
  signUp: $("sign-up"),
  signOut: $("sign-out"),
  notifyOn: $("notify-on"),
  dmHead: $("dm-head"),
  dmList: $("dm-list"),
  newDm: $("new-dm"),
  privateHead: $("private-head"),
  privateList: $("private-list"),
  newPrivate: $("new-private"),
  roomTopic: $("room-topic"),
  invite: $("invite"),
  setTopic: $("set-topic"),
  slowLabel: $("slow-label"),
  slowMode: $("slow-mode"),
};

/** Shows a notice; a sticky one stays until the next notice replaces it. */
export function announce(text, { sticky = false } = {}) {
  ui.alert.textContent = text;
  clearTimeout(announce.timer);
  if (!sticky) announce.timer = setTimeout(() => (ui.alert.textContent = ""), 8000);
}

