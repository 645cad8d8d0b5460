//! Zero-configuration discovery on a LAN (mDNS): peers that are given no bootstrap address find
//! each other. (Tests are added with the discovery module.)
