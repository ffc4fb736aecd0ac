# The assertions of nixpkgs modules that agent-vm's configuration could
# trip, restated (nixos/modules/config/users-groups.nix,
# tasks/filesystems.nix, tasks/filesystems/overlayfs.nix): the harness
# reports a failing one like the modules' own.
{ config, lib, ... }:
let
  users = lib.attrValues config.users.users;
  groupNames = lib.mapAttrsToList (_: g: g.name) config.users.groups;
  gids = lib.filter (g: g != null) (lib.mapAttrsToList (_: g: g.gid) config.users.groups);
  overlays = lib.filter (fs: fs.overlay.lowerdir != null) (lib.attrValues config.fileSystems);
in
{
  assertions =
    [
      {
        assertion = lib.length gids == lib.length (lib.unique gids);
        message = "UIDs and GIDs must be unique!";
      }
      {
        assertion = lib.any (fs: fs.mountPoint == "/") (lib.attrValues config.fileSystems)
          || config.fileSystems == { };
        message = "The ‘fileSystems’ option does not specify your root file system.";
      }
    ]
    ++ lib.concatMap (u: [
      {
        assertion = u.isNormalUser && u.uid != null -> u.uid >= 1000;
        message = "A user cannot have a users.users.${u.name}.uid set below 1000 and set isNormalUser.";
      }
      {
        assertion =
          let
            system = u.isSystemUser || (u.uid != null && u.uid < 1000 && !u.isNormalUser);
          in
          (system || u.isNormalUser) && !(system && u.isNormalUser);
        message = "Exactly one of users.users.${u.name}.isSystemUser and users.users.${u.name}.isNormalUser must be set.";
      }
      {
        assertion = u.group != "" && lib.elem u.group groupNames;
        message = "users.users.${u.name}.group (${u.group}) is unset or not a defined group.";
      }
    ]) users
    ++ map (fs: {
      assertion = (fs.overlay.upperdir == null) == (fs.overlay.workdir == null);
      message = "You cannot define a `lowerdir` without a `workdir` and vice versa for mount point: ${fs.mountPoint}";
    }) overlays;
}
