; Inno Setup script for Enclave. WINDOWS ONLY: built by installers\windows\build.ps1,
; which runs PyInstaller (dist\Enclave\) and then
;   iscc /DAppVersion=<version> installers\windows\enclave.iss
; Output: dist\Enclave-<version>-windows-x64-setup.exe
;
; Per-user install (no administrator rights): %LOCALAPPDATA%\Programs\Enclave, a Start-menu
; entry, an optional desktop icon, and an uninstaller in "Installed apps". The uninstaller
; removes the program only; models, conversations and settings (%LOCALAPPDATA%\Enclave)
; stay, as they may hold many gigabytes the user downloaded.

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif

[Setup]
AppId={{6F0C3C1E-5B7A-4C55-9E3B-2A8D6C1F4E21}
AppName=Enclave
AppVersion={#AppVersion}
AppVerName=Enclave {#AppVersion}
AppPublisher=Enclave
DefaultDirName={localappdata}\Programs\Enclave
DefaultGroupName=Enclave
DisableProgramGroupPage=yes
DisableDirPage=auto
PrivilegesRequired=lowest
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename=Enclave-{#AppVersion}-windows-x64-setup
SetupIconFile=..\..\assets\enclave.ico
UninstallDisplayIcon={app}\Enclave.exe
UninstallDisplayName=Enclave
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
; Enclave.exe must not be running while it is replaced or removed.
CloseApplications=yes

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
; Enclave.exe (the window), enclave-cli.exe (the command line) and _internal\ (Python, Qt,
; llama.cpp, assets). Both executables share _internal.
Source: "..\..\dist\Enclave\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\Enclave"; Filename: "{app}\Enclave.exe"; WorkingDir: "{app}"
Name: "{group}\Uninstall Enclave"; Filename: "{uninstallexe}"
Name: "{userdesktop}\Enclave"; Filename: "{app}\Enclave.exe"; WorkingDir: "{app}"; Tasks: desktopicon

[Dirs]
; The organisation's policy folder (README: Enterprise policy). C:\ProgramData lets every user
; create folders and files, so the installer makes this one and the [Run] lines below give it to
; Administrators, with no inherited rights: only they (and SYSTEM) can write a policy.toml here.
Name: "{commonappdata}\enclave"

[Run]
Filename: "{sys}\icacls.exe"; Parameters: """{commonappdata}\enclave"" /setowner *S-1-5-32-544"; Flags: runhidden
Filename: "{sys}\icacls.exe"; Parameters: """{commonappdata}\enclave"" /inheritance:r /grant:r *S-1-5-32-544:(OI)(CI)F *S-1-5-18:(OI)(CI)F *S-1-5-32-545:(OI)(CI)RX"; Flags: runhidden
Filename: "{app}\Enclave.exe"; Description: "{cm:LaunchProgram,Enclave}"; Flags: nowait postinstall skipifsilent

